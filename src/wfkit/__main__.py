"""``python -m wfkit``: the same as the ``wfkit`` command."""

from wfkit.cli import main

main()
