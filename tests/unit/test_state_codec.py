"""The versioned state codec: the recorded schema is the dataclasses' own, and a value stored
under an older schema reads by field name (new fields take their defaults, removed ones are
dropped, renamed ones are read from their old name)."""

import copy
import dataclasses
import pickle

import pytest

from conf import settings as settings_module
from tests.unit.dataclass_fields import differences
from tests.unit.test_profile import every_field_set
from udfs import state_codec
from udfs.profile_state import StateCodec, UserState, custom_types
from udfs.state_codec import Codec, recorded_schemas

S = settings_module.load("local").profile


def test_the_latest_recorded_schema_is_the_state_dataclasses_own():
    schemas = recorded_schemas()
    codec = Codec(UserState, custom_types(S))
    assert codec.version == max(schemas), (
        "the state's dataclasses changed: record a new schema version with"
        " `python -m udfs.state_codec --record`"
    )


def older_schema_codec(rename: bool):
    """A codec that knows a version 1 in which UserProfile had a field `gone` after `user_id`
    and no `late_events` (or had it as `overdue_events`, when `rename`), and the current
    schema as version 2; and a value of that version 1."""
    current = Codec(UserState, custom_types(S)).schema
    old = copy.deepcopy(current)
    fields = old["UserProfile"]
    fields.remove("late_events")
    fields.insert(1, "gone")
    if rename:
        fields.append("overdue_events")
    codec = Codec(UserState, custom_types(S), schemas={1: old, 2: current})
    user = every_field_set()
    _, payload = codec.encode(user)
    profile = list(payload[0])
    late = profile.pop(6)  # late_events, the 7th field
    profile.insert(1, "a value of a removed field")
    if rename:
        profile.append(late)
    return codec, user, (1, (tuple(profile), *payload[1:]))


def test_a_field_the_stored_version_lacks_takes_its_default_and_a_removed_one_is_dropped():
    codec, user, stored = older_schema_codec(rename=False)
    again = codec.decode(pickle.loads(pickle.dumps(stored)))
    assert differences(user, again) == [
        f".profile.late_events: {user.profile.late_events} != 0"  # its default
    ]


def test_a_renamed_field_is_read_from_its_old_name(monkeypatch):
    monkeypatch.setitem(state_codec.RENAMED, "UserProfile.late_events", "overdue_events")
    codec, user, stored = older_schema_codec(rename=True)
    assert differences(user, codec.decode(stored)) == []


def test_a_new_field_without_a_default_cannot_be_read_from_an_older_version():
    @dataclasses.dataclass
    class Before:
        a: int

    @dataclasses.dataclass
    class After:
        a: int
        b: int

    codec = Codec(After, schemas={1: {"After": ["a"]}, 2: {"After": ["a", "b"]}})
    with pytest.raises(ValueError, match="After.b is not in state schema version 1"):
        codec.decode((1, (3,)))
    assert codec.decode(codec.encode(After(1, 2))) == After(1, 2)


def test_a_schema_nobody_recorded_is_refused():
    @dataclasses.dataclass
    class Unrecorded:
        a: int

    with pytest.raises(ValueError, match="record"):
        Codec(Unrecorded, schemas={1: {"Unrecorded": ["b"]}})
    codec = StateCodec(S)
    with pytest.raises(ValueError, match="version 99"):
        codec.unpack((99, ()))
