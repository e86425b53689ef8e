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


def test_values_json_would_read_back_otherwise_are_found_with_where():
    from wfkit.jsontext import unfaithful

    assert unfaithful({"a": [1, 2.5, "x", None, True, {"b": []}]}) is None
    assert unfaithful([1, (2,)]) == ("a tuple (at [1]), which JSON stores as a list (a resumed run would see a list): "
                                     "use a list")
    assert unfaithful({"a": {"b": {1.5: 0}}}, "k") == (
        "a mapping with a key of type float, 1.5 (at ['k']['a']['b']), which JSON stores as the string \"1.5\" "
        "(a resumed run would see a string): use string keys")
    assert "key of type NoneType, None" in unfaithful({None: 1})
    wide = {"rows": [{"id": i, "tags": [i]} for i in range(500)] + [{"late": (1,)}]}
    assert unfaithful(wide) == ("a tuple (at ['rows'][500]['late']), which JSON stores as a list (a resumed run "
                                "would see a list): use a list")


def test_changed_texts_writes_only_what_changed_as_stored():
    from wfkit.jsontext import changed_texts, join_texts, key_texts

    texts = key_texts({"n": 1, "blob": "x" * 100, "items": [1]}, "the state")
    assert join_texts(texts) == '{"n":1,"blob":"' + "x" * 100 + '","items":[1]}'
    assert changed_texts({"n": 1, "blob": "x" * 100}, texts, "w") == ("{}", ["n", "blob"])
    assert changed_texts({"n": True, "items": [1, 2], "new": None}, texts, "w") == (
        '{"n":true,"items":[1,2],"new":null}', None)
    assert texts == {"n": "true", "blob": '"' + "x" * 100 + '"', "items": "[1,2]", "new": "null"}
    with pytest.raises(StateNotSerializableError, match=r"the output of node 'n' is not JSON-serializable: key "
                                                        r"'when' holds set"):
        changed_texts({"when": {1}}, texts, "the output of node 'n'")
    with pytest.raises(StateNotSerializableError, match=r"cannot be stored: it nests deeper than 100 levels \(at "
                                                        r"\['deep'\]"):
        changed_texts({"deep": nested(MAX_DEPTH)}, texts, "the output of node 'n'")  # one more level in the state
    assert changed_texts({"deep": nested(MAX_DEPTH - 1)}, texts, "w")[1] is None
