"""A plugin whose module cannot be imported."""

import wfkit_this_module_does_not_exist  # noqa: F401
