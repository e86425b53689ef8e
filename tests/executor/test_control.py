"""Run control (cancel, force-cancel, delete, resume checks) with the database only: no registry, no graph."""

from __future__ import annotations

import pytest

from factories import add, add_history, make_run
from wfkit.errors import InvalidStatusError, NotFoundError
from wfkit.executor.control import INTERRUPTED, RunControl
from wfkit.store.models import RunStatus, StageStatus


def test_cancel_a_pending_run_at_once_and_a_running_one_by_request(engine):
    pending, running = make_run(), make_run(status=RunStatus.RUNNING)
    add(engine, pending, running)
    control = RunControl(engine)
    assert control.cancel(str(pending.id)).status is RunStatus.CANCELLED
    requested = control.cancel(running.id)
    assert requested.status is RunStatus.RUNNING and requested.cancel_requested_at is not None
    with pytest.raises(InvalidStatusError, match="cannot go from cancelled to cancelled"):
        control.cancel(pending.id)


def test_force_cancel_marks_the_stage_left_started(engine):
    run = make_run(status=RunStatus.RUNNING)
    add(engine, run)
    stages, _ = add_history(engine, run, ["a", "b"])
    control = RunControl(engine)
    with engine.begin() as conn:  # b was running when its process died
        conn.exec_driver_sql("UPDATE stages SET status = 'started' WHERE node_name = 'b'")
    ended = control.cancel(run.id, force=True)
    assert ended.status is RunStatus.CANCELLED and ended.completed_at is not None
    by_node = {s.node_name: s for s in control.repository.get_stages(run.id)}
    assert by_node["a"].status is StageStatus.COMPLETED
    assert by_node["b"].status is StageStatus.FAILED and by_node["b"].error_message == INTERRUPTED


def test_delete_refuses_a_running_run_unless_forced(engine):
    from datetime import timedelta

    from wfkit.store.models import utcnow

    held = make_run(status=RunStatus.RUNNING, owner="host pid 1 (x)", lease_expires_at=utcnow() + timedelta(minutes=5))
    orphan = make_run(status=RunStatus.RUNNING)  # no lease: nobody holds it
    add(engine, held, orphan)
    control = RunControl(engine)
    with pytest.raises(InvalidStatusError, match=r"is running: cancel it first \(`wfkit runs cancel .*`\), or delete "
                                                 r"it anyway .* its process stops at its next write"):
        control.delete(held.id)
    with pytest.raises(InvalidStatusError, match=r"is running, but no process holds it \(its lease expired\): delete "
                                                 r"it with `wfkit runs delete .* --force`"):
        control.delete(orphan.id)
    for run in (held, orphan):
        control.delete(run.id, force=True)
        with pytest.raises(NotFoundError, match=f"no run with id {run.id}"):
            control.delete(run.id)


@pytest.mark.parametrize("status, force, allowed", [
    (RunStatus.FAILED, False, True),
    (RunStatus.CANCELLED, False, True),
    (RunStatus.RUNNING, False, False),
    (RunStatus.RUNNING, True, True),
    (RunStatus.COMPLETED, True, False),
    (RunStatus.PENDING, False, True),  # created, never started (its process died first): it starts
])
def test_resume_checks(engine, status, force, allowed):
    run = make_run(status=status)
    add(engine, run)
    control = RunControl(engine)
    if allowed:
        assert control.check_resume(run.id, force=force).id == run.id
    else:
        with pytest.raises(InvalidStatusError):
            control.check_resume(run.id, force=force)


def test_run_control_loads_no_executor_engine_or_plugins(wfkit_cli, db_url):
    """What cancelling or deleting needs is the database: neither the executor, nor the graph engine,
    nor the plugin machinery is loaded for it."""
    code = (
        "import sys, uuid\nfrom wfkit.executor import RunControl\n"
        f"with RunControl({db_url!r}) as control:\n"
        "    try:\n        control.cancel(uuid.uuid4())\n    except Exception as err:\n        print(type(err).__name__)\n"
        "print(sorted(m for m in sys.modules if m in ('wfkit.executor.executor', 'wfkit.executor.run_loop',"
        " 'wfkit.plugins', 'wfkit.registry', 'wfkit.graph', 'pluggy')))"
    )
    out = wfkit_cli.python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NotFoundError", "[]"]


def test_interrupt_stages_takes_an_id_as_text_and_refuses_a_malformed_one(engine):
    from wfkit.errors import InvalidQueryError

    run = make_run(status=RunStatus.FAILED)
    add(engine, run)
    add_history(engine, run, ["a"])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stages SET status = 'started'")
    control = RunControl(engine)
    assert control.interrupt_stages(str(run.id)) == 1
    assert control.repository.get_stages(run.id)[0].error_message == INTERRUPTED
    with pytest.raises(InvalidQueryError, match="invalid run id 'not-a-uuid'"):
        control.interrupt_stages("not-a-uuid")


def test_a_database_or_a_repository_not_both(engine):
    from wfkit.errors import ConfigurationError
    from wfkit.store.repository import Repository

    with pytest.raises(ConfigurationError, match="a database or a repository"):
        RunControl(engine, repository=Repository(engine))
