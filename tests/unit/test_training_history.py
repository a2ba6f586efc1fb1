"""Where training reads its history from: a log through a replay mapping, user by user, with
the ids `make replay` gives its rows, and the profile code's retention on the way."""

import csv
import gzip
import itertools
from pathlib import Path

import pytest

from conf import settings as settings_module
from jobs.replay import LogMapper, LogMapping, read_rows
from models import datasets
from models.history import LogHistory
from tests.conftest import TEST_NOW_MS
from tests.data import shop_log
from udfs.events import Event, EventParser, EventType

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "conf" / "mappings" / "retail_clickstream.yaml"
CONFIG = settings_module.load("local")


@pytest.fixture(scope="module")
def by_user():
    history = LogHistory(CONFIG, shop_log.PATH, MAPPING)
    span = history.span()
    users = dict(history.users())
    return span, users, history.skipped.reasons


def log_rows() -> list[dict]:
    with gzip.open(shop_log.PATH, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_user_comes_once_with_their_events_in_time_order(by_user):
    span, users, _ = by_user
    assert len(users) == span.users
    for events in users.values():
        assert [e.ts for e in events] == sorted(e.ts for e in events)
        assert len({e.user_id for e in events}) <= 1


def test_events_have_the_ids_and_sessions_replay_gives_them(by_user):
    _, users, _ = by_user
    mapping = LogMapping.load(MAPPING)
    mapper = LogMapper(mapping, EventParser(now_ms=lambda: TEST_NOW_MS), shop_log.PATH.name)
    rows = sorted(read_rows(shop_log.PATH, mapping.format), key=mapper.sort_key)
    replayed = [r for r in mapper.map_rows(rows) if isinstance(r, Event)]
    trained = sorted((e for events in users.values() for e in events), key=lambda e: e.event_id)
    assert trained == sorted(replayed, key=lambda e: e.event_id)


def test_rows_that_are_not_events_are_counted_by_reason(by_user):
    _, _, skipped = by_user
    rows = log_rows()
    unmapped = sum(1 for r in rows if r["event"] == "wishlist")
    no_price = sum(1 for r in rows if r["event"] == "view" and not r["price"])
    assert skipped == {"unmapped_event": unmapped, "schema_violation": no_price}


def test_a_customer_back_after_months_keeps_every_purchase_in_training(by_user):
    span, users, _ = by_user
    s, m = CONFIG.profile, CONFIG.models
    returning = [u for u in users if u.startswith("1")]
    for user in returning[:10]:
        purchases = [e for e in users[user] if e.type is EventType.PURCHASE]
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(purchases)]
        assert gaps and min(gaps) > s.ttl_ms  # quiet for longer than the short-term retention
        replayed = datasets.replay_user(users[user], s, m, span.last_ts)
        assert replayed.lifetime.count == len(purchases)
        assert replayed.lifetime.total == pytest.approx(sum(e.data.total for e in purchases))


def test_training_on_a_history_too_small_for_cohorts_says_what_to_do(tmp_path, capsys):
    from models import train

    sample = ROOT / "tests" / "data" / "retail_clickstream_sample.csv"
    argv = ["--file", str(sample), "--mapping", str(MAPPING), "--directory", str(tmp_path)]
    assert train.main([*argv, "--no-postgres"]) == 1
    error = capsys.readouterr().err
    assert "has 2 users with a profile: cohorts need at least 90" in error
    assert "--source generator" in error
    assert list(tmp_path.iterdir()) == []  # nothing registered


def test_a_log_needs_its_mapping_to_train(capsys):
    from models import train

    assert train.main(["--file", str(shop_log.PATH), "--no-postgres"]) == 1
    assert "a log needs both FILE= and MAPPING=" in capsys.readouterr().err
