"""The published contracts of the output topics: a JSON Schema of each topic's record key and
value, made from the output's single declaration (udfs/outputs.py), and versioned.

Published versions live in `udfs/schemas/topics/<topic>/v<N>.json` (`<topic>`: the topic's
name in `kafka.topics`), each holding the key's and the value's schema. A published version
never changes. When a declaration changes, `make contracts` publishes the next version, but
only when every consumer of the previous ones keeps working (`breaking_changes` is empty):
fields may be added; none may be removed or renamed, change type, or start to be null.
Consumers must ignore fields they do not know. See docs/consumers.md."""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from importlib import resources
from pathlib import Path

import fastjsonschema

from udfs import outputs
from udfs.events import SCHEMA_BASE_URI, Reason

DRAFT = "http://json-schema.org/draft-07/schema#"
JSON_TYPES = {
    "text": "string",
    "bigint": "integer",
    "int": "integer",
    "double": "number",
    "boolean": "boolean",
}
# A record's key is the UTF-8 text of one of its columns (dead letters: their coordinates).
SOURCE_KEY = {
    "type": "string",
    "description": "the bad record's source coordinates (topic/partition/offset, or file:line)",
}
# A dead letter's value (udfs/events.py DeadLetter.to_json).
DEAD_LETTER_VALUE = {
    "type": "object",
    "properties": {
        "dead_letter_id": {"type": "string"},
        "reason": {"enum": [r.value for r in Reason]},
        "detail": {"type": "string"},
        "source": {
            "type": "object",
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": ["integer", "null"]},
                "offset": {"type": "integer"},
            },
            "required": ["topic", "partition", "offset"],
        },
        "raw_size": {"type": "integer", "minimum": 0},
        "raw_base64": {"type": "string"},
    },
    "required": ["dead_letter_id", "reason", "detail", "source", "raw_size", "raw_base64"],
}


def topic_outputs() -> dict[str, outputs.Output]:
    """Topic (its name in `kafka.topics`) -> the declared output written to it."""
    return {o.topic: o for o in outputs.DECLARED if o.kafka}


def who(output: outputs.Output) -> str:
    """What an output's user_id holds, for its consumers (docs/privacy.md)."""
    if output.names_user == outputs.PSEUDONYM:
        return (
            "the user's keyed pseudonym, p- and 32 hex digits (HMAC-SHA256 of their id);"
            " their own id where privacy.pseudonymize is off"
        )
    if not output.purposes:
        return "the user's own id, whatever their consent"
    return (
        "the user's own id, for the system that acts on the record; only for users whose"
        f" consent allows {' or '.join(output.purposes)}"
    )


def column_schema(output: outputs.Output, name: str, column_type: str) -> dict:
    if column_type == "json":
        schema = dict(output.shapes.get(name, {}))
    else:
        schema = {"type": JSON_TYPES[column_type]}
    if name in output.notes:
        schema["description"] = output.notes[name]
    elif name == "user_id":
        schema["description"] = who(output)
    if name not in output.optional:
        return schema
    if set(schema) == {"type"} and isinstance(schema["type"], str):
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def value_schema(output: outputs.Output) -> dict:
    """Every column is present in the JSON; an optional one may be null."""
    return {
        "type": "object",
        "properties": {n: column_schema(output, n, t) for n, t in output.columns},
        "required": list(output.names),
    }


def current() -> dict[str, dict]:
    """Topic -> {"key": schema, "value": schema} as the declarations stand now."""
    contracts = {
        "events_dlq": {
            "key": SOURCE_KEY,
            "value": DEAD_LETTER_VALUE,
            "record_id": ["dead_letter_id"],
        }
    }
    for topic, output in topic_outputs().items():
        key = {"type": "string", "description": f"the record's {output.kafka_key} (UTF-8)"}
        contracts[topic] = {
            "key": key,
            "value": value_schema(output),
            "record_id": list(output.record_id),
        }
        if output.deletable:
            contracts[topic]["tombstones"] = True
    return contracts


# ------------------------------------------------------------------ published versions


def contracts_dir() -> Path:
    return Path(str(resources.files("udfs").joinpath("schemas", "topics")))


def published_versions(topic: str) -> list[int]:
    folder = contracts_dir() / topic
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.removeprefix("v")) for p in folder.glob("v*.json"))


def published(topic: str, version: int) -> dict:
    return json.loads((contracts_dir() / topic / f"v{version}.json").read_text())


def document(topic: str, version: int, contract: dict) -> dict:
    """A published file: the contract with its id and version."""
    return {
        "$id": f"{SCHEMA_BASE_URI}topics/{topic}/v{version}.json",
        "topic": topic,
        "version": version,
        "tombstones": contract.get("tombstones", False),
        "record_id": contract["record_id"],
        "key": {"$schema": DRAFT, **contract["key"]},
        "value": {"$schema": DRAFT, **contract["value"]},
    }


def content(doc: dict) -> dict:
    """What a published file says about records, without its id and version."""
    strip = lambda schema: {k: v for k, v in schema.items() if k != "$schema"}  # noqa: E731
    return {
        "key": strip(doc["key"]),
        "value": strip(doc["value"]),
        "record_id": doc["record_id"],
        **({"tombstones": True} if doc.get("tombstones") else {}),
    }


def latest(topic: str) -> dict:
    """The topic's latest published contract."""
    return published(topic, published_versions(topic)[-1])


@cache
def validators(topic: str) -> tuple:
    """(key validator, value validator) of the topic's latest published version."""
    doc = latest(topic)
    return fastjsonschema.compile(doc["key"]), fastjsonschema.compile(doc["value"])


# ------------------------------------------------------------------ compatibility


def types_of(schema: dict) -> set[str] | None:
    """The JSON types a schema allows (None: any)."""
    if "anyOf" in schema:
        allowed = [types_of(s) for s in schema["anyOf"]]
        return None if None in allowed else set().union(*allowed)
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    if "type" not in schema:
        return None
    t = schema["type"]
    return set(t) if isinstance(t, list) else {t}


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def breaking_changes(old: dict, new: dict, path: str = "") -> list[str]:
    """What a consumer written against schema `old` would trip over in records of `new`."""
    problems = []
    old_types, new_types = types_of(old), types_of(new)
    if old_types is not None:
        widened = (new_types or {"any"}) - old_types
        if "integer" in widened and "number" in old_types:
            widened.discard("integer")  # every integer is a number
        if widened:
            problems.append(f"{path or 'the record'}: may now be {sorted(widened)}")
    if "enum" in old and set(map(json.dumps, new.get("enum", [None]))) - set(
        map(json.dumps, old["enum"])
    ):
        problems.append(f"{path}: new values outside {old['enum']}")
    old_props, new_props = _object_part(old), _object_part(new)
    for name, old_field in old_props.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        if name not in new_props.get("properties", {}):
            problems.append(f"{where}: removed")
            continue
        if name in old_props.get("required", []) and name not in new_props.get("required", []):
            problems.append(f"{where}: no longer always present")
        problems += breaking_changes(old_field, new_props["properties"][name], where)
    if "items" in old and "items" in new:
        problems += breaking_changes(old["items"], new["items"], f"{path}[]")
    return problems


def _object_part(schema: dict) -> dict:
    """The object alternative of a (possibly nullable) schema."""
    for alternative in schema.get("anyOf", []):
        if "properties" in alternative:
            return alternative
    return schema


def contract_breaks(old: dict, new: dict) -> list[str]:
    problems = [f"key {p}" for p in breaking_changes(old["key"], new["key"])]
    problems += breaking_changes(old["value"], new["value"])
    if old.get("tombstones") and not new.get("tombstones"):
        problems.append("tombstones: no longer sent, so consumers would keep deleted users")
    if old["record_id"] != new["record_id"]:
        problems.append(f"record_id: {old['record_id']} became {new['record_id']}")
    return problems


# ------------------------------------------------------------------ publishing


def status() -> dict[str, tuple[int | None, list[str] | None]]:
    """Topic -> (latest published version or None, None when the declaration matches it, else
    the breaking changes against any published version, [] when compatible)."""
    result = {}
    for topic, contract in current().items():
        versions = published_versions(topic)
        if versions and content(published(topic, versions[-1])) == contract:
            result[topic] = (versions[-1], None)
            continue
        problems = []
        for version in versions:
            problems += [
                f"v{version}: {p}"
                for p in contract_breaks(content(published(topic, version)), contract)
            ]
        result[topic] = (versions[-1] if versions else None, problems)
    return result


def publish() -> list[str]:
    """Write the next version of every topic whose declaration changed compatibly; raise
    ValueError listing the breaking changes when any topic's did not."""
    state = status()
    broken = {t: p for t, (_, p) in state.items() if p}
    if broken:
        lines = [f"  {t}: {p}" for t, problems in broken.items() for p in problems]
        raise ValueError("breaking changes for existing consumers:\n" + "\n".join(lines))
    written = []
    for topic, (latest, problems) in state.items():
        if problems is None:
            continue
        version = (latest or 0) + 1
        path = contracts_dir() / topic / f"v{version}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = document(topic, version, current()[topic])
        path.write_text(json.dumps(doc, indent=2) + "\n")
        written.append(f"{topic} v{version}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udfs.contracts", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if anything is unpublished")
    args = parser.parse_args(argv)
    if args.check:
        pending = {t: p for t, (_, p) in status().items() if p is not None}
        for topic, problems in pending.items():
            print(f"{topic}: " + ("; ".join(problems) or "changed, not yet published"))
        return 1 if pending else 0
    try:
        written = publish()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("published " + ", ".join(written) if written else "every contract is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
