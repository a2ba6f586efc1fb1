"""The control stream: what the profile job scores and decides with, delivered to it while it
runs. Three kinds of record, each the whole of its kind:

    models      the registered model version (models.directory/registry.json, the manifest)
    policy      the action policy (conf/actions.yaml and conf/experiments.yaml, validated)
    modifiers   the rows of the PostgreSQL `cohort_modifiers` table

`python -m jobs.control` (`make control`; `make train` and every job submission do it too)
reads these sources and publishes each kind whose content differs from its latest record on
the `control` topic (one partition, keyed by kind, a compacted topic where the broker has
them), with the next sequence number of its kind. Nothing on the job's record path touches a
file or a database:

- at submission the client reads the topic's latest record of each kind: the job starts with
  them (the same records for every run started from the same topic, so replays agree);
- the job reads the topic as a broadcast stream; each subtask applies a record whose sequence
  is above the one it uses and keeps it in broadcast state, which checkpoints with the source's
  offset, so a restore resumes with what was in force at the checkpoint;
- a version or policy that fails to load, and any record that cannot be read, leaves the
  current one in use and is logged.

A record applies from when it reaches the job: events the job reads before it are scored with
what was in force before.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from kafka.errors import KafkaError

from conf import settings as settings_module
from conf.policy import Policy, load_policy
from conf.settings import Actions, ConfigError, Leads, Models, Settings, redact_secrets
from models.registry import Registry
from udfs.leads import Modifier
from udfs.rfm import RfmBreakpoints
from udfs.scoring import ModelSet

log = logging.getLogger(__name__)

MODELS, POLICY, MODIFIERS = "models", "policy", "modifiers"
KINDS = (MODELS, POLICY, MODIFIERS)


@dataclass(frozen=True)
class ControlRecord:
    kind: str
    sequence: int  # per kind, from 1; a subtask uses a record above the one it uses
    content: object  # plain JSON: the manifest, the policy, the modifier rows

    def encode(self) -> str:
        return json.dumps(
            {"kind": self.kind, "sequence": self.sequence, "content": self.content},
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str) -> ControlRecord:
        """Raises ValueError for anything but a record of a known kind."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise ValueError(f"not a control record: {text[:200]!r}")
        sequence = data.get("sequence")
        if not isinstance(sequence, int) or sequence < 1:
            raise ValueError(f"control record without a sequence: {text[:200]!r}")
        return cls(data["kind"], sequence, data.get("content"))


@dataclass(frozen=True)
class ScoringSettings:
    models: Models
    leads: Leads
    registry_dir: str | None  # absolute, so task managers find it whatever their directory
    actions: Actions | None = None  # None = no decision step


def scoring_settings(config: Settings) -> ScoringSettings:
    directory = str(Path(config.models.directory).resolve())
    return ScoringSettings(config.models, config.leads, directory, config.actions)


class LiveModels:
    """What the per-user pipeline scores and decides with (udfs.user_pipeline.Live), as the
    control records applied so far say."""

    def __init__(self, settings: ScoringSettings, records=()):
        self.s = settings
        self.models: ModelSet | None = None
        self.modifiers: list[Modifier] = []
        self.policy: Policy | None = None
        # Cohort names of every version loaded, so a move out of an old version names both ends.
        self.cohort_names: dict[int, dict[int, str]] = {}
        self.sequences: dict[str, int] = {}  # of the record in use, per kind
        self.swaps = 0
        for record in records:
            self.apply(record)

    @property
    def breakpoints(self) -> RfmBreakpoints | None:
        return self.models.rfm_breakpoints if self.models is not None else None

    def apply(self, record: ControlRecord) -> bool:
        """Uses the record if it is newer than the one in use of its kind and loads; returns
        whether it did."""
        if record.sequence <= self.sequences.get(record.kind, 0):
            return False
        try:
            if record.kind == MODELS:
                self._use_models(record.content)
            elif record.kind == POLICY:
                self._use_policy(record.content)
            else:
                self.modifiers = [Modifier(*row) for row in record.content]
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as e:
            log.error(
                "control %s #%d not used (%s); keeping the current one",
                record.kind,
                record.sequence,
                e,
            )
            return False
        self.sequences[record.kind] = record.sequence
        return True

    def _use_models(self, manifest: dict) -> None:
        if self.s.registry_dir is None:
            return
        if self.models is not None and manifest["version"] == self.models.version:
            return
        loaded = ModelSet(manifest, Registry(self.s.registry_dir).model_bytes)
        if self.models is not None:
            self.swaps += 1
            log.warning("model version %s -> %s", self.models.version, loaded.version)
        self.models = loaded
        self.cohort_names[loaded.version] = loaded.cohort_names

    def _use_policy(self, content: dict) -> None:
        if self.s.actions is None:
            return
        policy = Policy.model_validate(content)
        if self.policy is not None and policy != self.policy:
            log.warning("action policy changed")
        self.policy = policy


# ------------------------------------------------------------------ the sources


def plain(content):
    """The content as it reads back from its record (tuples become lists)."""
    return json.loads(json.dumps(content, sort_keys=True))


def policy_content(actions_file, experiments_file) -> dict:
    """The policy files' content, validated (ConfigError names every bad value)."""
    return plain(load_policy(actions_file, experiments_file).model_dump(mode="json"))


def read_sources(config: Settings, modifiers: bool = True) -> dict[str, object]:
    """The content of each kind (but the modifiers unless `modifiers`), from where it is kept;
    no models while no version is registered. Raises ConfigError for a policy that does not
    validate, psycopg.Error for a database that does not answer."""
    content: dict[str, object] = {}
    manifest = Registry(config.models.directory).load()
    if manifest is not None:
        content[MODELS] = plain(manifest)
    content[POLICY] = policy_content(config.actions.actions_file, config.actions.experiments_file)
    if not modifiers:
        return content
    with psycopg.connect(config.postgres.conninfo(), connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT modifier_id, cohort_match, context, intent_pct, capacity_pct"
            " FROM cohort_modifiers ORDER BY modifier_id"
        ).fetchall()
    content[MODIFIERS] = plain(rows)
    return content


def first_records(content: dict[str, object]) -> list[ControlRecord]:
    """Records of this content, as a topic's first ones (for runs without the topic)."""
    return [ControlRecord(kind, 1, value) for kind, value in content.items()]


# ------------------------------------------------------------------ the topic


def latest(config: Settings, timeout_s: float = 30.0) -> dict[str, ControlRecord]:
    """The latest record of each kind on the control topic (read to its end); records that
    cannot be read are logged and skipped."""
    from kafka import KafkaConsumer, TopicPartition

    partition = TopicPartition(config.kafka.topics.control.name, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    found: dict[str, ControlRecord] = {}
    try:
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        while consumer.position(partition) < end:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                raise TimeoutError(f"control topic {partition.topic} not read to its end")
            for message in batch.get(partition, []):
                try:
                    record = ControlRecord.decode(message.value.decode())
                except (ValueError, UnicodeDecodeError) as e:
                    log.error("control topic offset %d skipped: %s", message.offset, e)
                    continue
                found[record.kind] = record
    finally:
        consumer.close()
    return found


def publish(config: Settings, content: dict[str, object] | None = None) -> list[ControlRecord]:
    """Publishes each kind of `content` (the sources by default) that differs from its latest
    record on the topic; returns what it published."""
    from kafka import KafkaProducer

    content = read_sources(config) if content is None else content
    current = latest(config)
    changed = [
        ControlRecord(kind, current[kind].sequence + 1 if kind in current else 1, value)
        for kind, value in content.items()
        if kind not in current or current[kind].content != value
    ]
    if changed:
        producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
        try:
            for record in changed:
                topic = config.kafka.topics.control.name
                producer.send(topic, key=record.kind.encode(), value=record.encode().encode())
            producer.flush()
        finally:
            producer.close()
    return changed


def in_force(config: Settings) -> list[ControlRecord]:
    """What a job submitted now starts with: the sources published where they changed, then
    the topic's latest records."""
    for record in publish(config):
        print(f"control: published {record.kind} #{record.sequence}", file=sys.stderr)
    return list(latest(config).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.control",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    config = settings_module.load_or_exit()
    try:
        published = publish(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except psycopg.Error as e:
        print(f"error: cohort_modifiers not read: {redact_secrets(str(e))}", file=sys.stderr)
        return 1
    except (KafkaError, TimeoutError) as e:
        print(f"error: the control topic is not reachable: {e!r}", file=sys.stderr)
        return 1
    topic = config.kafka.topics.control.name
    for record in published:
        print(f"control: published {record.kind} #{record.sequence} to {topic}")
    if not published:
        print(f"control: {topic} already holds the current models, policy and modifiers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
