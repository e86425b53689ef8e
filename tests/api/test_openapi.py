"""The served OpenAPI document, checked by schemathesis against a real server on each engine: for
a bounded number of generated requests per operation, no 5xx, and every answer (status, content
type, body, headers) as the document says."""

from __future__ import annotations

import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings
from servers import api  # noqa: F401 (fixtures)

#: Requests generated per operation (and per engine): enough to reach every parameter's edges.
EXAMPLES = 25


def test_every_operation_answers_as_its_document_says(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15  # every route, /health included
    failures = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # A cursor, or a time (since/until), is text whose form no schema can say whole (a cursor
            # only this server made, a calendar date): a well-formed one may still be refused, with
            # a 400. Every other check still applies to those requests.
            free_text = bool(set(case.query or {}) & {"cursor", "since", "until"})
            case.call_and_validate(base_url=api.url, timeout=30,
                                   excluded_checks=[positive_data_acceptance] if free_text else None)

        try:
            check()
        except Exception as err:  # every operation is checked; all that fail are named
            failures.append(f"{operation.method.upper()} {operation.path}: {err}")
    assert not failures, "\n\n".join(failures)
