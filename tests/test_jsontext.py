"""JSON text as wfkit stores it: the checks every database needs, and the nesting limit."""

import pytest

from wfkit.errors import StateNotSerializableError
from wfkit.jsontext import MAX_DEPTH, check_json, dumps_state


def nested(levels: int, leaf=1):
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def test_the_nesting_limit_is_exact_and_names_where():
    assert check_json(nested(MAX_DEPTH)) == "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    with pytest.raises(ValueError, match=rf"it nests deeper than {MAX_DEPTH} levels \(at \[0\]\[0\]"):
        check_json(nested(MAX_DEPTH + 1))
    with pytest.raises(ValueError, match=r"nests deeper than 100 levels \(at \['b'\]\[0\]"):
        check_json({"a": [1, 2, {"x": 1}], "b": nested(150)})
    with pytest.raises(ValueError, match="nests deeper than"):
        check_json({"deep": nested(5000)})  # deeper than Python's own recursion: still one clear error
    wide = {"rows": [{"id": i, "tags": [i]} for i in range(500)]}  # many containers, none deep
    assert check_json(wide).startswith('{"rows":')


def test_a_state_too_deep_is_refused_naming_the_key():
    with pytest.raises(StateNotSerializableError, match=r"the output of node 'n' cannot be stored: it nests "
                                                        r"deeper than 100 levels \(at \['payload'\]"):
        dumps_state({"payload": nested(120)}, "the output of node 'n'")
    with pytest.raises(StateNotSerializableError, match="key 'when' holds set"):
        dumps_state({"ok": 1, "when": {1}}, "the state")
