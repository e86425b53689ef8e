import uuid

import pytest

from wfkit.errors import InvalidQueryError
from wfkit.ids import parse_uuid


def test_parse_uuid():
    u = uuid.uuid4()
    assert parse_uuid(u) is u
    assert parse_uuid(str(u).upper()) == u
    assert parse_uuid(u.hex) == u
    assert parse_uuid(f"  {u}\n") == u
    for bad in ("nope", "", "123", None, 42):
        with pytest.raises(InvalidQueryError, match=f"invalid run id {bad!r}: expected a UUID"):
            parse_uuid(bad)
    with pytest.raises(InvalidQueryError, match="invalid stage id 'x'"):
        parse_uuid("x", "stage id")
