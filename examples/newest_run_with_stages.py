"""A service's view of wfkit: import the read-only repository, no CLI involved.

Prints the id of the newest run that has recorded stages, after a summary of
recent failures. Uses WFKIT_DATABASE_URL (or the per-user default database).

    python examples/newest_run_with_stages.py
"""

import sys

from wfkit import PageRequest, Repository, RunFilters, WfkitError


def main() -> None:
    repo = Repository()  # or Repository("postgresql://user@host/db"); safe to share between threads

    failed = repo.list_runs(PageRequest(page=1, page_size=3), RunFilters(status="failed"))
    print(f"{failed.total} failed runs" + ("; the newest:" if failed.data else ""), file=sys.stderr)
    for run in failed.data:
        print(f"  {run.created_at:%Y-%m-%d %H:%M} {run.workflow_name}: {run.error_message}", file=sys.stderr)

    page = PageRequest(page=1, page_size=100)
    while True:
        result = repo.list_runs(page)
        for run in result.data:
            if repo.get_stages(run.id):
                print(run.id)
                return
        if result.page >= result.total_pages:
            sys.exit("no run has stages yet")
        page = PageRequest(page=result.page + 1, page_size=100)


if __name__ == "__main__":
    try:
        main()
    except WfkitError as err:  # not migrated, unreachable...: one line, as the CLI does
        sys.exit(f"Error: {err}")
