"""``wfkit worker``: execute runs submitted to the workers (Procrastinate on PostgreSQL)."""

from __future__ import annotations

import click

from wfkit.cli.common import cli, database_url, database_url_option


@cli.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many runs to execute at once.")
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only runs submitted to this queue (repeat for several; default: every queue).")
@click.option("--name", default=None, metavar="NAME", help="The worker's name in logs (default: worker).")
@database_url_option
def worker_cmd(concurrency: int, queues: tuple[str, ...], name: str | None) -> None:
    """Execute runs submitted with `wfkit submit`, until stopped.

    Prints a line as each run starts and ends. Needs PostgreSQL and the
    worker extra. Ctrl-C or SIGTERM stop it once its runs end.

    Example: wfkit worker --concurrency 4
    """
    from wfkit.errors import ConfigurationError
    from wfkit.executor.executor import WORKERS_NEED_POSTGRESQL
    from wfkit.store.db import normalize_url, resolve_database_url
    from wfkit.store.queue import available

    url = resolve_database_url(database_url())
    if normalize_url(url).get_backend_name() != "postgresql":
        raise ConfigurationError(WORKERS_NEED_POSTGRESQL)
    if not available():
        raise ConfigurationError("wfkit worker needs Procrastinate, which is not installed: pip install 'wfkit[worker]'")
    from wfkit.worker import run_worker

    run_worker(url, queues=queues, concurrency=concurrency, name=name,
               say=lambda line: click.echo(line))
