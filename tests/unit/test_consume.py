"""The example consumer handles each valid record once, reports invalid ones and tombstones."""

import io
import json

from jobs.consume import Handler
from udfs import outputs


def move(move_id: str, to_cohort=2) -> bytes:
    record = outputs.COHORT_MOVES.record(move_id, "u1", 5, None, to_cohort, None, "x", "first", 3)
    return record.value


def test_a_repeated_record_is_handled_once_and_an_invalid_one_reported():
    out = io.StringIO()
    handle = Handler("cohort_moves", out)
    handle(b"u1", move("m1"))
    handle(b"u1", move("m1"))  # the same record again, after a consumer restart
    handle(b"u1", move("m2"))
    bad = json.loads(move("m3"))
    bad["to_cohort"] = "two"
    handle(b"u1", json.dumps(bad).encode())
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["move_id"] for line in lines[:2]] == ["m1", "m2"]
    assert lines[2].startswith("INVALID") and "to_cohort" in lines[2]
    assert (handle.handled, handle.repeated, handle.invalid) == (2, 1, 1)


def test_a_tombstone_is_reported_as_a_deletion():
    out = io.StringIO()
    handle = Handler("scores", out)
    handle(b"u9", None)
    assert handle.tombstones == 1 and "deleted  u9" in out.getvalue()
