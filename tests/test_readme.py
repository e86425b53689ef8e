"""The README's plugin example runs as written."""

import re
from pathlib import Path

from wfkit.registry import Registry

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_plugin_example_in_readme():
    code = re.search(r"```python\n(# my_workflows/plugin.py.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    registry = Registry()
    namespace["wfkit_register_workflows"](registry)
    assert registry.list()[0].description == "Greet someone."
    graph, state = registry.get("hello").build({"name": "Ada", "loud": True})
    result = graph.run(state)
    assert result.state["text"] == "HELLO, ADA!"
    assert [(d.from_node, d.to_node, d.predicate_name) for d in result.decisions] == [
        ("greet", "shout", "wants_shouting"), ("shout", None, None)
    ]


def test_every_wfkit_command_in_readme_exists():
    from click.testing import CliRunner

    from wfkit.cli import cli

    commands = set(re.findall(r"^wfkit ([a-z-]+(?: [a-z-]+)?)", README, re.M))
    assert commands
    for command in commands:
        out = CliRunner().invoke(cli, [*command.split(), "--help"])
        assert out.exit_code == 0, (command, out.output)
