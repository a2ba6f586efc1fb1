"""What the profile job scores and decides with, kept current while it runs: the registered
model version (models.directory/registry.json), the PostgreSQL `cohort_modifiers` and the
action policy (conf/actions.yaml, conf/experiments.yaml). All are read when the job opens and
again every `models.reload_interval_s` of processing time, so registering a new version or
changing an experiment takes effect without a restart and without touching state. A version or
policy that fails to load, or a database that does not answer, leaves the current ones in use
and is logged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from conf.policy import Policy, load_policy
from conf.settings import Actions, ConfigError, Leads, Models
from models.registry import Registry
from udfs.leads import Modifier
from udfs.rfm import RfmBreakpoints
from udfs.scoring import ModelSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringSettings:
    models: Models
    leads: Leads
    registry_dir: str | None  # absolute, so task managers find it whatever their directory
    conninfo: str | None  # where cohort_modifiers live; None = no modifiers
    actions: Actions | None = None  # None = no decision step
    policy_files: tuple[str, str] | None = None  # absolute: actions, experiments


def scoring_settings(config) -> ScoringSettings:
    directory = str(Path(config.models.directory).resolve())
    a = config.actions
    files = (str(Path(a.actions_file).resolve()), str(Path(a.experiments_file).resolve()))
    return ScoringSettings(
        config.models, config.leads, directory, config.postgres.conninfo(), a, files
    )


class LiveModels:
    def __init__(self, settings: ScoringSettings, clock=time.monotonic):
        self.s, self.clock = settings, clock
        self.models: ModelSet | None = None
        self.modifiers: list[Modifier] = []
        self.policy: Policy | None = None
        # Cohort names of every version loaded, so a move out of an old version names both ends.
        self.cohort_names: dict[int, dict[int, str]] = {}
        self.next_check = 0.0
        self.swaps = 0

    @property
    def breakpoints(self) -> RfmBreakpoints | None:
        return self.models.rfm_breakpoints if self.models is not None else None

    def refresh(self, force: bool = False) -> None:
        now = self.clock()
        if not force and (now < self.next_check or self.s.models.reload_interval_s == 0):
            return
        self.next_check = now + self.s.models.reload_interval_s
        self._load_models(first=force)
        self._load_modifiers()
        self._load_policy()

    def _load_models(self, first: bool) -> None:
        if self.s.registry_dir is None:
            return
        registry = Registry(self.s.registry_dir)
        try:
            manifest = registry.load()
            if manifest is None:
                if first:
                    log.warning("no model version registered in %s", registry.directory)
                return
            if self.models is not None and manifest["version"] == self.models.version:
                return
            loaded = ModelSet(manifest, registry.model_bytes)
        except (OSError, ValueError, KeyError) as e:
            log.error("model registry %s: %s; keeping the current version", registry.directory, e)
            return
        if self.models is not None:
            self.swaps += 1
            log.warning("model version %s -> %s", self.models.version, loaded.version)
        self.models = loaded
        self.cohort_names[loaded.version] = loaded.cohort_names

    def _load_policy(self) -> None:
        if self.s.policy_files is None:
            return
        try:
            policy = load_policy(*self.s.policy_files)
        except (OSError, ConfigError) as e:
            log.error("action policy not loaded (%s); keeping the current one", e)
            return
        if policy == self.policy:
            return
        if self.policy is not None:
            log.warning("action policy changed")
        self.policy = policy

    def _load_modifiers(self) -> None:
        if self.s.conninfo is None:
            return
        try:
            with psycopg.connect(self.s.conninfo, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT modifier_id, cohort_match, context, intent_pct, capacity_pct"
                    " FROM cohort_modifiers ORDER BY modifier_id"
                ).fetchall()
        except psycopg.Error as e:
            kept = len(self.modifiers)
            log.error("cohort_modifiers not read (%s); keeping %d", type(e).__name__, kept)
            return
        self.modifiers = [Modifier(*row) for row in rows]
