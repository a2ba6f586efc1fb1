"""Round-trip checks that notice a forgotten field: values are compared leaf by leaf along the
fields the dataclasses declare (`dataclasses.fields`), not along what a codec chose to write."""

import dataclasses
import math


def leaves(value, path: str = "") -> dict[str, object]:
    """Every leaf of a value by its path: dataclass fields, slots, named-tuple fields, dict
    entries and list items."""
    if (names := field_names(value)) is not None:
        out = {f"{path}:{type(value).__name__}": True}
        for name in names:
            out |= leaves(getattr(value, name), f"{path}.{name}")
        return out
    if isinstance(value, dict):
        out = {f"{path}{{}}": len(value)}
        for key, item in value.items():
            out |= leaves(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        out = {f"{path}[]": len(value)}
        for i, item in enumerate(value):
            out |= leaves(item, f"{path}[{i}]")
        return out
    return {path: value}


def field_names(value) -> list[str] | None:
    """The declared fields of a dataclass, a slotted class or a named tuple; None otherwise."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [f.name for f in dataclasses.fields(value)]
    if hasattr(value, "_fields"):
        return list(value._fields)
    if hasattr(type(value), "__slots__") and not isinstance(value, (tuple, str)):
        return list(type(value).__slots__)
    return None


def differences(expected, actual) -> list[str]:
    want, got = leaves(expected), leaves(actual)
    return [
        f"{path}: {want.get(path)!r} != {got.get(path)!r}"
        for path in sorted(want.keys() | got.keys())
        if not same(want.get(path), got.get(path))
    ]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def fields_at_default(value, path: str = "") -> list[str]:
    """Dataclass fields (at any depth) that hold their declared default: a codec that forgot
    one of them would go unnoticed, so a round-trip fixture must set them all."""
    out = []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item == default_of(f):
                out.append(f"{path}.{f.name}")
            out += fields_at_default(item, f"{path}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            out += fields_at_default(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out += fields_at_default(item, f"{path}[{i}]")
    return out


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING  # a required field: nothing to compare with
