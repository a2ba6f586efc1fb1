"""Keyed pseudonyms (udfs/pseudonyms.py): where the key comes from, and which outputs of the
per-user pipeline name users by them."""

import dataclasses
import json
import os
import pickle
import re

import pytest

from bench.in_memory import InMemoryPipeline
from conf import settings as settings_module
from conf.settings import PSEUDONYM_KEY_VARIABLE, ConfigError, Privacy, pseudonym_key
from jobs.control import scoring_settings
from tests.unit.test_bench import send
from udfs import outputs
from udfs.pseudonyms import Pseudonyms

KEY = b"k" * 32


def test_a_pseudonym_is_stable_per_key_and_tells_nothing_of_the_id():
    one, other = Pseudonyms(KEY), Pseudonyms(b"o" * 32)
    p = one.of("u000042")
    assert re.fullmatch(r"p-[0-9a-f]{32}", p)
    assert one.of("u000042") == Pseudonyms(KEY).of("u000042") == p
    assert other.of("u000042") != p and one.of("u000043") != p
    assert "u000042" not in p and "kkkk" not in repr(one)
    # Pickled into Flink's workers: the same pseudonyms there.
    assert pickle.loads(pickle.dumps(one)).of("u000042") == p


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonyms(b"short")


def test_the_key_comes_from_the_environment_before_the_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv(PSEUDONYM_KEY_VARIABLE, raising=False)
    privacy = Privacy(pseudonym_key_file=str(tmp_path / "keys" / "pseudonym.key"))
    made = pseudonym_key(privacy)
    path = tmp_path / "keys" / "pseudonym.key"
    assert len(made) == 64 and path.read_text().strip().encode() == made
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert pseudonym_key(privacy) == made, "made once, then read"
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]

    monkeypatch.setenv(PSEUDONYM_KEY_VARIABLE, "e" * 40)
    assert pseudonym_key(privacy) == b"e" * 40
    monkeypatch.setenv(PSEUDONYM_KEY_VARIABLE, "short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        pseudonym_key(privacy)


def test_without_a_key_pseudonymization_fails_clearly_unless_it_is_off(monkeypatch):
    monkeypatch.delenv(PSEUDONYM_KEY_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=f"set {PSEUDONYM_KEY_VARIABLE}"):
        pseudonym_key(Privacy())
    assert pseudonym_key(Privacy(pseudonymize=False)) is None


def outputs_of(settings, events) -> list:
    """With the policy files (actions), without models (the unit tier has none: no cohorts)."""
    scoring = dataclasses.replace(scoring_settings(settings), registry_dir=None)
    pipeline = InMemoryPipeline(settings, 1, scoring, control=None)
    out = [o for offset, e in enumerate(events) for o in send(pipeline, e, offset)]
    pipeline.advance(2**63 - 1, out)
    return out


def columns(emitted) -> dict:
    return dict(zip(emitted.output.names, emitted.values, strict=True))


def test_analytical_outputs_name_users_by_pseudonym_and_operational_ones_by_id(
    settings, small_history, monkeypatch
):
    monkeypatch.setenv(PSEUDONYM_KEY_VARIABLE, KEY.decode())
    subject = Pseudonyms(KEY).of
    events = small_history.events
    users = {e["user_id"] for e in events}
    out = outputs_of(settings, events)
    by_output: dict[str, list] = {}
    for emitted in out:
        by_output.setdefault(emitted.output.name, []).append(columns(emitted))
    for name in ("profiles", "sessions", "scores", "leads"):
        assert by_output[name], name
        assert {row["user_id"] for row in by_output[name]} <= {subject(u) for u in users}, name
    # No raw id anywhere in an analytical record, whichever column.
    analytical = [e for e in out if e.output.names_user == outputs.PSEUDONYM]
    text = json.dumps([e.values for e in analytical], default=str)
    assert not [u for u in users if u in text]
    # The archive keeps the id unless told otherwise; actions name the person they are for.
    assert {row["user_id"] for row in by_output["archive"]} == users
    assert by_output["actions"] and {row["user_id"] for row in by_output["actions"]} <= users

    told = settings_module.load("local", overrides={"privacy.pseudonymize_archive": True})
    archive = [columns(e) for e in outputs_of(told, events[:50]) if e.output is outputs.ARCHIVE]
    assert {row["user_id"] for row in archive} == {subject(e["user_id"]) for e in events[:50]}


def test_pseudonymization_off_leaves_the_ids(settings, small_history):
    off = settings_module.load("local", overrides={"privacy.pseudonymize": False})
    profiles = [
        e for e in outputs_of(off, small_history.events[:50]) if e.output.name == "profiles"
    ]
    assert {columns(e)["user_id"] for e in profiles} <= {e["user_id"] for e in small_history.events}
