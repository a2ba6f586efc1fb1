"""Actions and experiments: what the profile job may do for a user, and which users get what.

Both are plain YAML in `conf/` (`actions.yaml`, `experiments.yaml`), validated here; a bad file
fails with every wrong value named. `make control` sends them to the running job (jobs/control.py),
so a changed experiment takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import json
import string
from datetime import UTC, date, datetime, time
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from conf.settings import ConfigError, Strict

# The scores an action can watch: learned propensities, the profile's model-free ones, the lead
# score and a few profile features.
SCORES = (
    "abandonment",
    "drift",
    "purchase",
    "profile_purchase",
    "add_to_cart",
    "checkout_start",
    "churn",
    "lead",
    "intent",
    "engagement",
    "deviation",
)
# What a payload template may refer to (${name}); see udfs/actions.py for their values.
PAYLOAD_FIELDS = (
    "user_id",
    "action",
    "score",
    "threshold",
    "cart_total",
    "discount_amount",
    "top_category",
    "cohort_name",
)
# A payload field that asks for the user's recommendation list (filled with its item ids by the
# profile job's ranking step, udfs/recommendation_steps.py); `blend` in the payload picks a blend.
RECOMMENDED_ITEMS = ("items", "${recommendations}")
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Threshold = Annotated[float, Field(ge=0)]


class Eligibility(Strict):
    """Every condition given must hold for the action to be considered."""

    open_cart: bool | None = None  # the current session has a cart and no purchase yet
    min_events: Annotated[int, Field(ge=0)] = 0
    cohorts: tuple[str, ...] = ()  # substrings of the cohort name (any of them), ignoring case


class Action(Strict):
    name: Name
    score: str
    threshold: Threshold
    priority: int  # the highest-priority action whose score is over its threshold wins
    cooldown_ms: Annotated[int, Field(ge=0)] = 0  # after firing, not again for this long
    cap_per_day: Annotated[int, Field(ge=1)] = 1  # per user per UTC day of event time
    discount_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    eligible: Eligibility = Eligibility()
    payload: dict[str, str | int | float | bool] = {}
    experiments: bool = True  # False: never part of an experiment (e.g. security alerts)
    # The consents (udfs/consent.py) the action needs beyond analytics: `personalization` for
    # content and recommendations, `marketing` for offers; none for a service message such as a
    # security alert. Undeclared: marketing.
    purposes: tuple[Literal["personalization", "marketing"], ...] = ("marketing",)

    @model_validator(mode="after")
    def known_score_and_fields(self):
        if self.score not in SCORES:
            raise ValueError(f"score {self.score!r} is not one of {', '.join(SCORES)}")
        if RECOMMENDED_ITEMS in self.payload.items() and "personalization" not in self.purposes:
            raise ValueError("an action with the user's recommendations needs personalization")
        for key, value in self.payload.items():
            if not isinstance(value, str) or (key, value) == RECOMMENDED_ITEMS:
                continue
            unknown = set(string.Template(value).get_identifiers()) - set(PAYLOAD_FIELDS)
            if unknown:
                raise ValueError(f"payload {key!r} refers to unknown {sorted(unknown)}")
        return self


class VariantChange(Strict):
    """How a variant changes one action; absent fields keep the action's own values."""

    enabled: bool = True
    threshold: Threshold | None = None
    discount_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    payload: dict[str, str | int | float | bool] | None = None


class Variant(Strict):
    name: Name
    weight: Annotated[float, Field(gt=0)]
    control: bool = False  # receives nothing; decisions are logged as "would have triggered"
    actions: dict[str, VariantChange] = {}
    # In an experiment about lead scoring: false scores the arm's leads without the cohort
    # modifiers (udfs/leads.py).
    lead_modifiers: bool = True


class Experiment(Strict):
    name: Name
    layer: Name  # experiments in one layer never share a user
    traffic: Annotated[float, Field(gt=0, le=1)]  # share of the layer's users it takes
    salt: str  # changing it reshuffles who gets which variant
    active: bool = True
    actions: tuple[str, ...] = ()  # the actions this experiment is about
    # About lead scoring instead: each lead score of its users is scored as their arm's
    # `lead_modifiers` says, and gets an outcome (a purchase within `leads.horizon_ms`).
    leads: bool = False
    variants: tuple[Variant, ...]
    # The run a report covers, in event time: users first exposed from `start` until `end`
    # (UTC; a date alone is its midnight). Changing an arm (its payload, threshold or weight)
    # starts a new run: decisions before the change answer a different question.
    start: datetime | None = None
    end: datetime | None = None
    # How far before a user's first exposure the report looks for the pre-exposure covariate
    # (purchases and revenue) that CUPED adjusts by and the balance check compares.
    pre_period_days: Annotated[int, Field(ge=1, le=366)] = 28

    @field_validator("start", "end", mode="before")
    @classmethod
    def utc(cls, value):
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(), UTC)
        return value

    @field_validator("start", "end")
    @classmethod
    def aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    @cached_property
    def arms_version(self) -> str:
        """A fingerprint of the arms (each variant's weight, control flag and changes) and of who
        gets which (salt, traffic): every decision carries it, and a report covers the
        decisions of one version, since a changed arm answers a different question. The run's
        period and the report's settings are not part of it."""
        arms = self.model_dump(mode="json", exclude={"active", "start", "end", "pre_period_days"})
        return hashlib.sha256(json.dumps(arms, sort_keys=True).encode()).hexdigest()[:12]

    def run_ms(self) -> tuple[int | None, int | None]:
        """The run's start and end as epoch milliseconds (None: open)."""
        return tuple(
            None if t is None else int(t.timestamp() * 1000) for t in (self.start, self.end)
        )

    @model_validator(mode="after")
    def variants_make_sense(self):
        if self.start and self.end and self.end <= self.start:
            raise ValueError("an experiment's end must come after its start")
        names = [v.name for v in self.variants]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("an experiment needs at least two variants with distinct names")
        for v in self.variants:
            if set(v.actions) - set(self.actions):
                raise ValueError(f"variant {v.name!r} changes actions outside the experiment")
        if self.leads:
            if self.actions or any(v.control for v in self.variants):
                raise ValueError(
                    "an experiment about lead scoring has no actions and no control variant"
                )
        elif not self.actions:
            raise ValueError("an experiment names its actions, or is about leads (leads: true)")
        elif any(not v.lead_modifiers for v in self.variants):
            raise ValueError("lead_modifiers is for variants of an experiment about leads")
        return self


class Policy(Strict):
    actions: tuple[Action, ...]
    experiments: tuple[Experiment, ...] = ()

    @model_validator(mode="after")
    def consistent(self):
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError("action names must be unique")
        known = set(names)
        excluded = {a.name for a in self.actions if not a.experiments}
        layers: dict[str, float] = {}
        for e in self.experiments:
            if set(e.actions) - known:
                raise ValueError(f"experiment {e.name!r} names unknown actions")
            if set(e.actions) & excluded:
                raise ValueError(f"experiment {e.name!r} includes an action kept out of them")
            if e.active:
                layers[e.layer] = layers.get(e.layer, 0.0) + e.traffic
        crowded = [layer for layer, share in layers.items() if share > 1 + 1e-9]
        if crowded:
            raise ValueError(f"layers {crowded} give more than all of their users away")
        layer_of: dict[str, str] = {}
        for e in self.experiments:
            for action in e.actions:
                if layer_of.setdefault(action, e.layer) != e.layer:
                    raise ValueError(
                        f"action {action!r} is in experiments of layers {layer_of[action]!r} and "
                        f"{e.layer!r}: experiments over one action must share a layer"
                    )
        lead_layers = {e.layer for e in self.experiments if e.leads and e.active}
        if len(lead_layers) > 1:
            raise ValueError(
                f"active experiments about leads are in layers {sorted(lead_layers)}:"
                " they must share one layer"
            )
        experiment_names = [e.name for e in self.experiments]
        if len(set(experiment_names)) != len(experiment_names):
            raise ValueError("experiment names must be unique")
        return self

    @cached_property
    def by_priority(self) -> tuple[Action, ...]:
        """The actions in the order the decision step tries them: highest priority first."""
        return tuple(sorted(self.actions, key=lambda a: -a.priority))

    @cached_property
    def active_layers(self) -> dict[str, tuple[Experiment, ...]]:
        """Active experiments by layer, in file order (the order of the layer's slices)."""
        layers: dict[str, list[Experiment]] = {}
        for e in self.experiments:
            if e.active:
                layers.setdefault(e.layer, []).append(e)
        return {layer: tuple(found) for layer, found in layers.items()}

    @cached_property
    def action_layers(self) -> dict[str, str]:
        """The layer of each action that active experiments cover (one layer per action)."""
        return {
            a: layer
            for layer, found in self.active_layers.items()
            for e in found
            for a in e.actions
        }

    @cached_property
    def lead_layer(self) -> str | None:
        """The layer of the active experiments about lead scoring, if any."""
        return next((e.layer for e in self.experiments if e.leads and e.active), None)

    def action(self, name: str) -> Action:
        return next(a for a in self.actions if a.name == name)


def default_paths() -> tuple[Path, Path]:
    folder = Path(str(resources.files("conf")))
    return folder / "actions.yaml", folder / "experiments.yaml"


class Bound(Strict):
    """A score's range, from `min` (included) to `max` (excluded)."""

    min: float | None = None
    max: float | None = None


class CandidateRule(Strict):
    arm: Name  # a variant of the experiment
    when: dict[str, Bound] = {}  # every bound must hold; a score the unit lacks fails it

    @model_validator(mode="after")
    def known_scores(self):
        unknown = set(self.when) - set(SCORES)
        if unknown:
            raise ValueError(f"unknown scores {sorted(unknown)}; known: {', '.join(SCORES)}")
        return self

    def matches(self, scores: dict[str, float]) -> bool:
        for name, bound in self.when.items():
            value = scores.get(name)
            if value is None or (bound.min is not None and value < bound.min):
                return False
            if bound.max is not None and value >= bound.max:
                return False
        return True


class Candidate(Strict):
    """A candidate targeting policy for an experiment's users (`make estimate`): the first rule
    that matches a user's scores picks their arm, else `otherwise`."""

    name: Name
    experiment: Name
    rules: tuple[CandidateRule, ...] = ()
    otherwise: Name

    def arm_for(self, scores: dict[str, float]) -> str:
        return next((r.arm for r in self.rules if r.matches(scores)), self.otherwise)


def load_candidate(path: str | Path) -> Candidate:
    """Reads and validates a candidate policy file; raises ConfigError naming every bad value."""
    try:
        return Candidate.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except OSError as exc:
        raise ConfigError(f"cannot read the candidate policy: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"invalid candidate policy in {path}:\n" + "\n".join(lines)) from None


def load_policy(actions_path: str | Path | None = None, experiments_path=None) -> Policy:
    """Reads and validates both files; raises ConfigError naming every bad value."""
    default_actions, default_experiments = default_paths()
    actions_path = Path(actions_path or default_actions)
    experiments_path = Path(experiments_path or default_experiments)
    try:
        data = yaml.safe_load(actions_path.read_text()) or {}
        if experiments_path.exists():
            data |= yaml.safe_load(experiments_path.read_text()) or {}
        return Policy.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy files are not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(
            f"invalid policy in {actions_path} / {experiments_path}:\n" + "\n".join(lines)
        ) from None
