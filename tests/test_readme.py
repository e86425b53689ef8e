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


def test_every_wfkit_command_in_readme_exists(wfkit_cli):
    commands = set(re.findall(r"^wfkit ([a-z-]+(?: [a-z][a-z-]*)?)", README, re.M))  # a command, not an option
    assert commands
    for command in commands:
        out = wfkit_cli.invoke(*command.split(), "--help")
        assert out.returncode == 0, (command, out.stdout, out.stderr)


def test_the_demo_runs_the_samples_and_shows_their_history(tmp_path):
    """`make demo` runs examples/demo.sh: every sample completes, and the history lists them."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
    out = subprocess.run(["bash", str(root / "examples" / "demo.sh"), str(Path(sys.executable).parent),
                          str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    text = out.stdout
    for name in ("text-pipeline", "branching", "review-loop"):
        assert re.search(rf"^{name} ", text, re.M)  # listed
    assert len(re.findall(r"^run \S+ completed$", text, re.M)) == 2  # review-loop's went to its JSON file
    assert "    receive -> express [is_express=true]" in text
    assert "page 1 of 1 (3 runs)" in text
    assert re.search(r"^review +publish +score_ok +true ", text, re.M)  # the review loop's decisions
    assert (tmp_path / "demo" / "wfkit.db").exists()


def test_the_layout_tree_matches_the_code():
    """README's tree lists every module and package of src/wfkit, and nothing that is not there."""
    root = Path(__file__).parents[1]
    block = re.search(r"## Layout\n\n```\n(.*?)```", README, re.S).group(1)
    listed, parents = set(), []
    for line in block.splitlines():
        if not line.startswith("  "):
            continue  # the top-level folders (src/wfkit/, tests/, ...)
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        parents[depth - 1:] = [name.rstrip("/")]
        listed.add("/".join(parents))
    package = root / "src" / "wfkit"
    present = set()
    for path in package.rglob("*"):
        relative = path.relative_to(package)
        if "__pycache__" in relative.parts or relative.parts[:2] == ("store", "alembic") and len(relative.parts) > 2:
            continue  # the migration scripts are listed as their folder
        if relative.parts[:2] in (("web", "templates"), ("web", "static")) and len(relative.parts) > 2 and \
                not path.is_dir():
            continue  # the viewer's pages and files are listed as their folders
        if path.is_dir():
            present.add(relative.as_posix())
        elif path.suffix == ".py" and not (path.name == "__init__.py" and len(relative.parts) > 1):
            present.add(relative.as_posix())
    assert listed == present


def test_the_idempotency_example_runs_and_sees_one_key_per_node_execution(tmp_path):
    from wfkit.executor import Executor
    from wfkit.runtime import Runtime
    from wfkit.store import migrations

    code = re.search(r"```python\n(# a node's side effect, made safe to repeat.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    charged = []

    class Payments:
        def charge(self, order, idempotency_key):
            charged.append((order, idempotency_key))

    registry = Registry()
    registry.register("checkout", namespace["checkout"])
    url = f"sqlite:///{tmp_path / 'readme.db'}"
    migrations.upgrade(url)
    with Executor(url, registry=registry, runtime=Runtime(services={"payments": Payments()})) as executor:
        run = executor.execute("checkout", {"order": "A-17"})
    assert run.status.value == "completed" and charged == [("A-17", f"{run.id}:charge:1")]


def test_the_api_service_example_runs(tmp_path, monkeypatch):
    """README's service mounts the router behind its own dependency: it answers as the README says."""
    from fastapi.testclient import TestClient

    from wfkit.store import migrations

    monkeypatch.chdir(tmp_path)
    migrations.upgrade("sqlite:///runs.db")
    code = re.search(r"```python\n(# service.py.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        assert client.get("/wf/workflows").status_code == 403
        workflows = client.get("/wf/workflows", headers={"X-Team": "ops"})
        assert workflows.status_code == 200 and "text-pipeline" in {w["name"] for w in workflows.json()}
        run = client.post("/wf/workflows/text-pipeline/runs", json={}, headers={"X-Team": "ops"})
        assert run.status_code == 202
        done = client.get(run.headers["location"], params={"wait": 30}, headers={"X-Team": "ops"}).json()
        assert done["status"] == "completed"


def test_the_testing_example_is_the_plugin_templates_own_tests():
    """README's pytest example is taken, test by test, from the template's tests, which the suite
    runs for real (tests/testing/test_pytest_plugin.py)."""
    code = re.search(r"```python\n# tests/test_hello.py\n(.*?)```", README, re.S).group(1)
    template = (Path(__file__).parents[1] / "examples" / "wfkit-plugin-template" / "tests" / "test_hello.py").read_text()
    chunks = [chunk.strip() for chunk in code.split("\n\n\n")]
    assert len(chunks) == 3 and chunks[-1].startswith("def test_")
    for chunk in chunks:
        assert chunk in template, chunk
