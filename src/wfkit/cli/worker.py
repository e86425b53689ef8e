"""``wfkit worker`` and ``wfkit workers``: execute runs submitted to the workers, and list the workers
(Procrastinate on PostgreSQL)."""

from __future__ import annotations

import click

from wfkit.cli.common import cli, database_url, database_url_option, echo_json, json_option


def _postgresql_url() -> str:
    from wfkit.errors import ConfigurationError
    from wfkit.executor.executor import WORKERS_NEED_POSTGRESQL
    from wfkit.store.db import normalize_url, resolve_database_url

    url = resolve_database_url(database_url())
    if normalize_url(url).get_backend_name() != "postgresql":
        raise ConfigurationError(WORKERS_NEED_POSTGRESQL)
    return url


@cli.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many runs to execute at once.")
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only runs submitted to this queue (repeat for several; default: every queue).")
@click.option("--name", default=None, metavar="NAME",
              help="The worker's name, in its lines and in the owner of the runs it holds (default: worker).")
@click.option("--json-logs", is_flag=True, help="Print one JSON object per line instead of text.")
@database_url_option
def worker_cmd(concurrency: int, queues: tuple[str, ...], name: str | None, json_logs: bool) -> None:
    """Execute runs submitted with `wfkit submit`, until stopped.

    Prints a line as each run starts and ends. Needs PostgreSQL and the
    worker extra. Ctrl-C or SIGTERM: each run goes back to the queue before
    its next node (another worker continues it), then the worker exits; a
    second signal exits at once (its runs are recovered once their leases
    expire). WFKIT_LEASE_SECONDS, WFKIT_RECOVERY_SECONDS and
    WFKIT_MAX_ATTEMPTS tune how a dead worker's runs are taken over.

    Example: wfkit worker --concurrency 4
    """
    from wfkit.executor.executor import check_workers
    from wfkit.store.db import engine_for

    url = _postgresql_url()
    with engine_for(url, create_missing=False) as engine:
        check_workers(engine)
    if name is not None and (not name.strip() or len(name) > 100 or name != name.strip()):
        raise click.BadParameter("a name of 1 to 100 characters, no spaces around it", param_hint="--name")
    from wfkit.worker import max_attempts, recovery_seconds, run_worker

    recovery_seconds(), max_attempts()  # a bad setting is an error before anything starts
    run_worker(url, queues=queues, concurrency=concurrency, name=name, json_logs=json_logs,
               write=lambda line: click.echo(line))


@cli.command("workers")
@json_option
@database_url_option
def workers_cmd(as_json: bool) -> None:
    """List the workers: name, host, heartbeat, runs in hand.

    A worker that stopped without saying so (killed, or its machine gone)
    is shown as silent until the workers' recovery has handed its runs on.

    Example: wfkit workers --json
    """
    from wfkit.executor.lease import lease_seconds
    from wfkit.formatting import fmt_when
    from wfkit.store.db import create_engine, translate_errors
    from wfkit.store.workers import list_workers

    url = _postgresql_url()
    engine = create_engine(url, create_missing=False)
    try:
        with translate_errors(engine):
            found = list_workers(engine, silent_seconds=lease_seconds())
    finally:
        engine.dispose()
    if as_json:
        echo_json([worker.to_dict() for worker in found])
        return
    if not found:
        click.echo("No workers. Start one with: wfkit worker")
        return
    rows = [("NAME", "HOST", "PID", "STATE", "LAST HEARTBEAT", "RUNS", "QUEUES")]
    for w in found:
        rows.append((w.name, w.host, str(w.pid), "live" if w.alive else "silent", fmt_when(w.last_heartbeat),
                     str(w.runs), ", ".join(w.queues) or "every queue"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
