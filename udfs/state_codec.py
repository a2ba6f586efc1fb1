"""A versioned codec for dataclass trees, derived from their fields: a value is stored as
(schema version, plain tuples), each dataclass as the tuple of its fields in declaration order.
Plain values (numbers, strings, lists, dicts, tuples) pickle in C, small, and carry no field
names.

The schema (each dataclass's field names) of every version ever stored is recorded in
`state_schemas.json`; the unit tests fail when the dataclasses no longer match the latest one,
until `python -m udfs.state_codec --record` records a new version. A value of an older version
is read field by field by name: a field it lacks takes its default (a new field must have one),
a field it has that is gone is dropped, and a renamed field is read from its old name
(RENAMED)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

SCHEMAS_FILE = Path(__file__).with_name("state_schemas.json")
# "Class.new_name": "old_name", for fields renamed since an older version.
RENAMED: dict[str, str] = {}

Encoder = Callable[[object], object]
Decoder = Callable[[object], object]


def _identity(value):
    return value


class Custom(typing.NamedTuple):
    """How a type that is not a dataclass is stored: as plain values, and back."""

    encode: Encoder
    decode: Decoder


class Codec:
    """Encodes a `root` dataclass tree as (version, plain tuples) and decodes any recorded
    version of it. `custom`: types stored otherwise than as dataclasses."""

    def __init__(
        self,
        root: type,
        custom: dict[type, Custom] | None = None,
        schemas: dict[int, dict[str, list[str]]] | None = None,
    ):
        self.root, self.custom = root, custom or {}
        self.classes = reachable_dataclasses(root, self.custom)
        self.schema = {c.__name__: [f.name for f in dataclasses.fields(c)] for c in self.classes}
        self.schemas = recorded_schemas() if schemas is None else schemas
        matching = [v for v, schema in self.schemas.items() if schema == self.schema]
        if not matching:
            raise ValueError(
                f"the state's dataclasses match no recorded schema in {SCHEMAS_FILE.name}:"
                " run `python -m udfs.state_codec --record`"
            )
        self.version = max(matching)
        self._encoders: dict[type, Encoder] = {}
        self._decoders: dict[tuple[int, object], Decoder] = {}
        self._encode_root = self._encoder(root)
        self._decode_current = self._decoder(root, self.version)

    def encode(self, value) -> tuple:
        return (self.version, self._encode_root(value))

    def decode(self, stored: tuple):
        version, payload = stored
        if version == self.version:
            return self._decode_current(payload)
        if version not in self.schemas:
            raise ValueError(f"state schema version {version} is not recorded")
        return self._decoder(self.root, version)(payload)

    # ------------------------------------------------------------ encoders

    def _encoder(self, tp) -> Encoder:
        if tp in self.custom:
            return self.custom[tp].encode
        if dataclasses.is_dataclass(tp):
            if tp not in self._encoders:
                hints = typing.get_type_hints(tp)  # (the state has no recursive types)
                parts = [(f.name, self._encoder(hints[f.name])) for f in dataclasses.fields(tp)]
                self._encoders[tp] = _compiled(
                    "obj",
                    [
                        f"obj.{name}" if enc is _identity else f"e{i}(obj.{name})"
                        for i, (name, enc) in enumerate(parts)
                    ],
                    {f"e{i}": enc for i, (_, enc) in enumerate(parts)},
                    "",
                )
            return self._encoders[tp]
        inner = _optional_inner(tp)
        if inner is not None:
            enc = self._encoder(inner)
            return _identity if enc is _identity else (lambda v: None if v is None else enc(v))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list:
            enc = self._encoder(args[0])
            return _identity if enc is _identity else (lambda v: [enc(x) for x in v])
        if origin is dict:
            enc = self._encoder(args[1])
            return _identity if enc is _identity else (lambda v: {k: enc(x) for k, x in v.items()})
        return _identity

    # ------------------------------------------------------------ decoders

    def _decoder(self, tp, version: int) -> Decoder:
        if tp in self.custom:
            return self.custom[tp].decode
        if dataclasses.is_dataclass(tp):
            key = (version, tp)
            if key not in self._decoders:
                self._decoders[key] = self._dataclass_decoder(tp, version)
            return self._decoders[key]
        inner = _optional_inner(tp)
        if inner is not None:
            dec = self._decoder(inner, version)
            return _identity if dec is _identity else (lambda v: None if v is None else dec(v))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list:
            dec = self._decoder(args[0], version)
            return _identity if dec is _identity else (lambda v: [dec(x) for x in v])
        if origin is dict:
            dec = self._decoder(args[1], version)
            return _identity if dec is _identity else (lambda v: {k: dec(x) for k, x in v.items()})
        return _identity

    def _dataclass_decoder(self, cls: type, version: int) -> Decoder:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        stored = self.schemas[version].get(cls.__name__)
        if stored is None:
            raise ValueError(f"{cls.__name__} is not in state schema version {version}")
        position = {name: i for i, name in enumerate(stored)}
        parts = []  # (position in the stored tuple or None, decoder or default factory)
        for f in fields:
            at = position.get(f.name, position.get(RENAMED.get(f"{cls.__name__}.{f.name}")))
            if at is not None:
                parts.append((at, self._decoder(hints[f.name], version)))
            elif f.default is not dataclasses.MISSING:
                parts.append((None, lambda default=f.default: default))
            elif f.default_factory is not dataclasses.MISSING:
                parts.append((None, f.default_factory))
            else:
                raise ValueError(
                    f"{cls.__name__}.{f.name} is not in state schema version {version} and has"
                    " no default"
                )
        args = []
        for i, (at, dec) in enumerate(parts):
            if at is None:
                args.append(f"d{i}()")
            else:
                args.append(f"v[{at}]" if dec is _identity else f"d{i}(v[{at}])")
        names = {f"d{i}": dec for i, (_, dec) in enumerate(parts)}
        return _compiled("v", args, names | {"cls": cls}, "cls")


def _compiled(arg: str, items: list[str], names: dict, call: str):
    """A function of `arg` returning `call(items...)` (a tuple when `call` is empty), made
    once per dataclass and version: as fast as one written by hand."""
    body = f"{call}({', '.join(items)}{',' if not call and len(items) == 1 else ''})"
    namespace = dict(names)
    exec(f"def f({arg}):\n    return {body}\n", namespace)  # noqa: S102 - code built above
    return namespace["f"]


def _optional_inner(tp):
    """X for `X | None`, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(tp):
            return args[0]
    return None


def reachable_dataclasses(root: type, custom: dict) -> list[type]:
    """Every dataclass in the tree under `root` (custom types are not looked into)."""
    found: list[type] = []

    def visit(tp) -> None:
        if tp in custom:
            return
        if dataclasses.is_dataclass(tp):
            if tp in found:
                return
            found.append(tp)
            for hint in typing.get_type_hints(tp).values():
                visit(hint)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def recorded_schemas() -> dict[int, dict[str, list[str]]]:
    if not SCHEMAS_FILE.exists():
        return {}
    return {int(v): schema for v, schema in json.loads(SCHEMAS_FILE.read_text()).items()}


def record(schema: dict[str, list[str]]) -> int:
    """Records `schema` as a new version (unless it is the latest); returns its version."""
    schemas = recorded_schemas()
    if schemas and schemas[max(schemas)] == schema:
        return max(schemas)
    version = max(schemas, default=0) + 1
    schemas[version] = schema
    SCHEMAS_FILE.write_text(json.dumps({str(v): s for v, s in schemas.items()}, indent=1) + "\n")
    return version


def main(argv: list[str] | None = None) -> int:
    from udfs.profile_state import UserState, custom_types

    argv = sys.argv[1:] if argv is None else argv
    schema = {
        c.__name__: [f.name for f in dataclasses.fields(c)]
        for c in reachable_dataclasses(UserState, custom_types(None))
    }
    if argv != ["--record"]:
        print("usage: python -m udfs.state_codec --record", file=sys.stderr)
        return 2
    print(f"state schema version {record(schema)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
