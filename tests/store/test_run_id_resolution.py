"""Short run ids in the store: a prefix of at least 6 hex digits, or ``latest``, resolved to one run
through the primary key (Repository.resolve_run_id); the shortest start that tells an id apart
(Repository.short_ids); candidates for completion (Repository.match_run_ids). On both engines."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from factories import T0, add, count, make_run
from wfkit.errors import AmbiguousRunIdError, InvalidQueryError, NotFoundError
from wfkit.ids import new_id
from wfkit.store.models import Run


def _run(hex_id: str, minutes: int = 0, **fields):
    return make_run(id=uuid.UUID(hex_id), created_at=T0 + timedelta(minutes=minutes), **fields)


@pytest.fixture
def twins(engine):
    """Three runs: two whose ids share their first 10 digits, and one apart."""
    runs = [_run("0194a3b27c1e7a3f8000000000000001", 0, workflow_name="alpha"),
            _run("0194a3b27c2e7a3f8000000000000002", 1, workflow_name="beta"),
            _run("9f00000000004000800000000000000a", 2, workflow_name="gamma")]
    add(engine, *runs)
    return runs


def test_a_unique_prefix_in_any_form_resolves_to_its_run(repo, twins):
    first, second, third = (r.id for r in twins)
    for text in ("9f0000", "9F0000", " 9f00-00 ", "9f000000-0000-4", "9f00000000004000800000000000000"):
        assert repo.resolve_run_id(text) == third, text
    assert repo.resolve_run_id("0194a3b27c1") == first
    assert repo.resolve_run_id("0194a3b2-7c2e") == second


def test_a_whole_id_is_taken_as_it_is_without_reading(repo, twins):
    missing = uuid.uuid4()
    for given in (missing, str(missing), missing.hex, f"urn:uuid:{missing}", f"{{{missing}}}"):
        assert repo.resolve_run_id(given) == missing  # whether it exists is the next read's to say
    with pytest.raises(NotFoundError, match=f"no run with id {missing}"):
        repo.find_run(repo.resolve_run_id(str(missing)))


def test_latest_is_the_newest_run_by_creation_time_then_id(repo, engine, twins):
    assert repo.resolve_run_id("latest") == twins[2].id
    assert repo.resolve_run_id(" LATEST ") == twins[2].id
    # created at the same moment as the newest: the higher id decides
    tie = _run("ffffffff000040008000000000000000", 2)
    add(engine, tie)
    assert repo.resolve_run_id("latest") == tie.id
    older = _run("fffffffffff040008000000000000000", -5)  # a higher id, but older: not the latest
    add(engine, older)
    assert repo.resolve_run_id("latest") == tie.id


def test_latest_on_an_empty_database_is_not_found(repo):
    with pytest.raises(NotFoundError, match="no run yet: latest names the newest run"):
        repo.resolve_run_id("latest")


def test_an_ambiguous_prefix_names_the_candidates_newest_first(repo, twins):
    with pytest.raises(AmbiguousRunIdError) as caught:
        repo.resolve_run_id("0194a3b27c")
    err = caught.value
    assert err.http_status == 409 and err.candidates == (twins[1].id, twins[0].id)
    message = str(err)
    assert "\n" not in message and message.startswith("run id '0194a3b27c' is ambiguous: 2 runs' ids start with it")
    assert f"{twins[1].id} (beta, pending, created 2026-01-01 12:01:00Z); {twins[0].id} (alpha" in message
    assert message.endswith("give more of its digits")


def test_many_candidates_are_cut_to_a_few(repo, engine):
    runs = [_run(f"abcdef{i:02x}" + "0" * 8 + "4000800000000000", i) for i in range(8)]
    add(engine, *runs)
    with pytest.raises(AmbiguousRunIdError) as caught:
        repo.resolve_run_id("abcdef")
    assert len(caught.value.candidates) == 5 and caught.value.candidates[0] == runs[-1].id
    assert "more than 5 runs' ids start with it" in str(caught.value) and "; ...; give more" in str(caught.value)


def test_no_match_is_not_found(repo, twins):
    with pytest.raises(NotFoundError, match="no run with an id starting '123456'"):
        repo.resolve_run_id("123456")
    # just past the range of a stored id's prefix, on either side
    with pytest.raises(NotFoundError):
        repo.resolve_run_id("9f0001")
    with pytest.raises(NotFoundError):
        repo.resolve_run_id("9effff")


@pytest.mark.parametrize(("text", "message"), [
    ("9f000", "run id '9f000' is too short: give a UUID, at least 6 of its first hex digits, or latest"),
    ("", "run id '' is too short"),
    ("9f00zz", "invalid run id '9f00zz': expected a UUID, at least 6 of its first hex digits, or latest"),
    ("latest-but-one", "invalid run id 'latest-but-one'"),
    ("' OR 1=1 --", "invalid run id \"' OR 1=1 --\""),
    ("0" * 33, "invalid run id '000000000000000000000000000000000'"),
    (None, "invalid run id None"),
])
def test_text_that_is_no_form_of_id_is_bad_input_naming_it(repo, engine, twins, text, message):
    with pytest.raises(InvalidQueryError, match="^" + message.replace("(", r"\(").replace("'", "'")):
        repo.resolve_run_id(text)
    assert count(engine, Run) == 3


def test_short_ids_are_the_shortest_start_no_other_id_shares(repo, engine, twins):
    first, second, third = (r.id for r in twins)
    short = repo.short_ids([first, second, third])
    # the twins share 10 digits: 11 tell them apart; the third needs only the 8 asked for at least
    assert short == {first: "0194a3b2-7c1", second: "0194a3b2-7c2", third: "9f000000"}
    for rid, text in short.items():
        assert repo.resolve_run_id(text) == rid
    assert repo.short_ids([third], min_digits=12) == {third: "9f000000-0000"}
    assert repo.short_ids([]) == {}
    # a run added later that shares more of an id makes its short id longer
    add(engine, _run("9f000000000f4000800000000000000b", 3))
    assert repo.short_ids([third]) == {third: "9f000000-0000"}


def test_ids_made_close_in_time_get_short_ids_that_resolve(repo, engine):
    runs = [make_run(id=new_id()) for _ in range(30)]  # time first: they share their first digits
    add(engine, *runs)
    short = repo.short_ids([r.id for r in runs])
    assert len(set(short.values())) == 30
    for run in runs:
        assert repo.resolve_run_id(short[run.id]) == run.id
        assert run.id.hex.startswith(short[run.id].replace("-", ""))


def test_match_run_ids_for_completion(repo, twins):
    newest = repo.match_run_ids("", limit=2)
    assert [m.id for m in newest] == [twins[2].id, twins[1].id]
    assert (newest[0].workflow_name, newest[0].status) == ("gamma", "pending")
    assert newest[0].created_at == T0 + timedelta(minutes=2)
    assert [m.id for m in repo.match_run_ids("0194")] == [twins[1].id, twins[0].id]  # any length here
    assert [m.id for m in repo.match_run_ids("0194A3B2-7C1")] == [twins[0].id]
    assert repo.match_run_ids("zz") == [] and repo.match_run_ids("1" * 40) == []
    with pytest.raises(InvalidQueryError, match="limit must be a whole number of at least 1, got 0"):
        repo.match_run_ids("", limit=0)
