import gzip
from pathlib import Path

import pytest

from conf import settings as settings_module
from conf.settings import ConfigError
from jobs.replay import LogMapper, LogMapping, fill_template, read_rows, replay
from tests.conftest import TEST_NOW_MS
from tests.data import shop_log
from udfs.events import DeadLetter, Event, EventParser, EventType, Reason

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "retail_clickstream_sample.csv"
MAPPING = ROOT / "conf" / "mappings" / "retail_clickstream.yaml"


@pytest.fixture
def mapped():
    mapping = LogMapping.load(MAPPING)
    mapper = LogMapper(mapping, EventParser(now_ms=lambda: TEST_NOW_MS), SAMPLE.name)
    rows = sorted(read_rows(SAMPLE, mapping.format), key=mapper.sort_key)
    return list(mapper.map_rows(rows))


def test_rows_come_out_in_event_time_order(mapped):
    events = [r for r in mapped if isinstance(r, Event)]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len(events) == 7


def test_event_names_map_onto_contract_types(mapped):
    events = [r for r in mapped if isinstance(r, Event)]
    purchase = next(e for e in events if e.type is EventType.PURCHASE)
    assert purchase.data.order_id == "T-4000"
    assert purchase.data.items[0].product_id == "355908"
    assert purchase.data.total == pytest.approx(24.9)


def test_sessions_are_cut_at_the_inactivity_gap(mapped):
    visitor = [r for r in mapped if isinstance(r, Event) and r.user_id == "257597"]
    # four events within minutes, then one two hours later
    assert len({e.session_id for e in visitor[:4]}) == 1
    assert visitor[4].session_id != visitor[0].session_id


def test_unmapped_and_unconvertible_rows_are_dead_lettered_with_line_numbers(mapped):
    letters = {r.source.offset: r for r in mapped if isinstance(r, DeadLetter)}
    assert letters[8].reason is Reason.UNMAPPED_EVENT and "'rate'" in letters[8].detail
    assert letters[9].reason is Reason.SCHEMA_VIOLATION and "not-a-price" in letters[9].detail
    assert letters[8].raw.startswith(b"1767225960000,992329,rate")
    assert len(mapped) == 9


def replayed_ids(path: Path) -> list[str]:
    mapping = LogMapping.load(MAPPING)
    mapper = LogMapper(mapping, EventParser(now_ms=lambda: TEST_NOW_MS), path.name)
    rows = sorted(read_rows(path, "csv"), key=mapper.sort_key)
    return [r.event_id for r in mapper.map_rows(rows) if isinstance(r, Event)]


def test_replaying_the_same_file_gives_the_same_event_ids(tmp_path):
    first = replayed_ids(SAMPLE)
    assert len(set(first)) == 7, "one distinct id per valid line"
    copy = tmp_path / SAMPLE.name  # the same file, replayed again from elsewhere
    copy.write_bytes(SAMPLE.read_bytes())
    assert replayed_ids(copy) == first
    renamed = tmp_path / "another_log.csv"  # another source: ids of its own
    renamed.write_bytes(SAMPLE.read_bytes())
    assert not set(replayed_ids(renamed)) & set(first)


def test_template_references_cast_and_literals_pass_through():
    values = {"price": "3.5", "qty": "2", "flag": "yes", "id": "p1"}
    template = {"a": "$price:float", "b": ["$qty:int", {"c": "$flag:bool"}], "d": 7, "e": "$id"}
    assert fill_template(template, values) == {"a": 3.5, "b": [2, {"c": True}], "d": 7, "e": "p1"}
    with pytest.raises(KeyError):
        fill_template("$missing", values)


def test_invalid_mapping_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nuser: u\nevent_name: e\ntimestamp: {column: t, unit: hours}\n"
        "events: {view: {type: page_view}}\n"
    )
    with pytest.raises(ConfigError, match="unit"):
        LogMapping.load(bad)


def test_a_gzipped_log_reads_like_the_plain_one(tmp_path):
    packed = tmp_path / "sample.csv.gz"
    with gzip.open(packed, "wb") as handle:
        handle.write(SAMPLE.read_bytes())
    assert list(read_rows(packed, "csv")) == list(read_rows(SAMPLE, "csv"))


def test_a_log_older_than_min_ts_is_refused_naming_the_setting_before_publishing():
    # An address nothing answers at: the refusal must come before any connection is tried.
    settings = settings_module.load(
        "local", {"events.min_ts_ms": 1_800_000_000_000, "kafka.bootstrap_servers": "127.0.0.1:1"}
    )
    with pytest.raises(ConfigError, match=r"9 rows .* older than events.min_ts_ms") as refused:
        replay(settings, SAMPLE, MAPPING)
    assert "conf/local.yaml" in str(refused.value)
    assert "at or below 1767225600000" in str(refused.value)


def test_the_committed_shop_log_is_what_its_writer_writes(tmp_path):
    assert shop_log.write(tmp_path / "log.csv.gz").read_bytes() == shop_log.PATH.read_bytes()


def test_context_columns_map_to_a_minimized_context_and_missing_ones_are_left_out(tmp_path):
    log = tmp_path / "tracker.csv"
    log.write_text(
        "ts,user,event,item,ip,ua,lang,country\n"
        "1767225600000,u1,view,p1,83.12.45.200,Mozilla/5.0 (Windows NT 10.0; Win64; x64),de-DE,DE\n"
        "1767225660000,u1,view,p2,,,,\n"
        "1767225720000,u1,rate,p3,83.12.45.200,Mozilla/5.0 (Windows NT 10.0; Win64; x64),,\n"
    )
    mapping = LogMapping.model_validate(
        {
            "name": "tracker",
            "user": "user",
            "event_name": "event",
            "timestamp": {"column": "ts"},
            "events": {
                "view": {
                    "type": "product_view",
                    "fields": {"product_id": "$item", "category": "c", "price": 1.0},
                }
            },
            "context": {
                "ip": "$ip",
                "user_agent": "$ua",
                "locale": "$lang",
                "geo": {"country": "$country"},
            },
        }
    )
    mapping.events["view"].fields["attributes"] = {}
    mapper = LogMapper(mapping, EventParser(now_ms=lambda: TEST_NOW_MS), log.name)
    first, bare, letter = mapper.map_rows(sorted(read_rows(log, "csv"), key=mapper.sort_key))
    assert first.context.to_json() == {
        "device_type": "desktop",
        "locale": "de-DE",
        "ip": "83.12.45.0",
        "geo": {"country": "DE"},
    }
    assert bare.context is None
    assert isinstance(letter, DeadLetter) and letter.reason is Reason.UNMAPPED_EVENT
    assert letter.raw == b"1767225720000,u1,rate,p3,83.12.45.0,desktop,,"
