"""A report covers one run of an experiment: the decisions of its period made with the current
version of its arms (jobs/report.py `Run`). Decisions written to PostgreSQL under two versions
of the arms (a weight changed in between) and before versions existed: the report of the
current version counts only its own, each user at their first decision of that version."""

import uuid

import psycopg
import pytest

from conf.policy import Experiment
from jobs.report import Run, exposures

T0 = 1_780_000_000_000
HOUR = 3_600_000


def experiment(name: str, weight: float) -> Experiment:
    return Experiment.model_validate(
        {
            "name": name,
            "layer": "checkout",
            "traffic": 1.0,
            "salt": name,
            "actions": ["discount_offer"],
            "variants": [
                {"name": "control", "weight": 1, "control": True},
                {"name": "discount", "weight": weight},
            ],
        }
    )


@pytest.fixture
def decided(local_stack):
    """(old spec, current spec): users a, b decided under the old arms, c, d under the current
    ones, b again under the current ones, e before arms had versions."""
    name = f"scope_{uuid.uuid4().hex[:8]}"
    old, current = experiment(name, 1), experiment(name, 3)
    rows = [
        ("a", T0, old.arms_version, True),
        ("b", T0 + HOUR, old.arms_version, False),
        ("c", T0 + 2 * HOUR, current.arms_version, True),
        ("d", T0 + 3 * HOUR, current.arms_version, False),
        ("b", T0 + 4 * HOUR, current.arms_version, True),
        ("e", T0 - HOUR, None, True),
    ]
    with psycopg.connect(local_stack.postgres.conninfo()) as conn:
        for user, ts, arms, converted in rows:
            decision = f"{name}|{user}|{ts}"
            conn.execute(
                "INSERT INTO actions (decision_id, user_id, ts, action, score_name, score,"
                " threshold, payload, experiment, variant, delivered, scores, arms)"
                " VALUES (%s, %s, %s, 'discount_offer', 'abandonment', 0.9, 0.7, '{}', %s,"
                " 'discount', true, '{}', %s)",
                (decision, f"{name}-{user}", ts, name, arms),
            )
            conn.execute(
                "INSERT INTO action_outcomes (decision_id, user_id, action, experiment, variant,"
                " delivered, decided_ts, converted, outcome_ts, revenue)"
                " VALUES (%s, %s, 'discount_offer', %s, 'discount', true, %s, %s, %s, 0)",
                (decision, f"{name}-{user}", name, ts, converted, ts + HOUR),
            )
    yield old, current
    with psycopg.connect(local_stack.postgres.conninfo()) as conn:
        conn.execute("DELETE FROM action_outcomes WHERE experiment = %s", (name,))
        conn.execute("DELETE FROM actions WHERE experiment = %s", (name,))


def firsts(conn, run: Run) -> dict[str, tuple[int, bool]]:
    return {o.user_id.rsplit("-", 1)[1]: (o.first_ts, o.converted) for o in exposures(conn, run)}


def test_a_report_covers_the_current_arms_and_pools_every_version_only_when_asked(
    local_stack, decided
):
    old, current = decided
    assert old.arms_version != current.arms_version
    with psycopg.connect(local_stack.postgres.conninfo()) as conn:
        assert firsts(conn, Run.configured(current)) == {
            "c": (T0 + 2 * HOUR, True),
            "d": (T0 + 3 * HOUR, False),
            "b": (T0 + 4 * HOUR, True),  # at their first decision of this version
        }
        assert firsts(conn, Run.configured(old)) == {"a": (T0, True), "b": (T0 + HOUR, False)}
        pooled = firsts(conn, Run.configured(current, any_arms=True))
        assert pooled["b"] == (T0 + HOUR, False) and set(pooled) == {"a", "b", "c", "d", "e"}
        # The period scopes too.
        assert set(firsts(conn, Run.configured(current, since=T0 + 3 * HOUR))) == {"b", "d"}
