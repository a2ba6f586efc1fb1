"""An experiment with a known true effect, end to end: generated traffic is published at a steady
pace into the real broker while the profile job runs unbounded (local Flink, checkpointing on);
simulated users read the decisions, as a downstream service would, and accept a delivered
discount with a known probability by buying their cart (models/responses.py). The
experiment report, computed from the PostgreSQL outcomes, must recover the true uplift within its
confidence interval, and the control arm must have received nothing."""

import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from conf.policy import Candidate, load_policy
from jobs import profile as job
from jobs.estimate import logged_units, propensities
from jobs.publish import Publisher
from jobs.report import Run, archive_naming, experiment_report, histories
from models.generator import EventGenerator
from models.off_policy import evaluate
from models.responses import OfferResponses
from tests.conftest import event_bytes
from tests.integration.conftest import without_recommendations
from udfs.pseudonyms import configured_subject
from udfs.timeunits import DAY_MS

EXPERIMENT = "offer_uplift"
ACCEPT = 0.5  # a delivered discount is accepted (the cart bought) with this probability
START_TS_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z: this test's own stretch of event time
USERS, DAYS, SEED = 400, 4, 31
PACE = 150  # records per second at most
# Every HEARTBEAT events the clock users send a page view; publishing waits while the job's
# profiles of them trail the traffic by more than MAX_LAG_MS of event time, so answers to
# decisions always come well inside their attribution window.
HEARTBEAT = 250
MAX_LAG_MS = 6 * 3_600_000
# While publishing waits, the clock users repeat their page view this often: a partition
# silent for longer than `profile.idleness_ms` stops holding back the watermark, and with event
# time running about a thousand times faster than the wall clock here, the first partitions to
# resume would move it hours past records still waiting in the others.
WAITING_HEARTBEAT_S = 5.0
CLOCK_USERS = [f"clock-{i:02d}" for i in range(16)]  # cover every partition of `events`

EXPERIMENTS_YAML = f"""
experiments:
  - name: {EXPERIMENT}
    layer: checkout
    traffic: 1.0
    salt: offer-uplift-test
    actions: [discount_offer]
    variants:
      - {{name: control, weight: 1, control: true}}
      - {{name: discount, weight: 1}}
"""


def clock_event(user: str, ts: int, repeat: int = 0) -> dict:
    """A page view of a user outside the experiment, to open the run, move event time on or
    keep a partition active."""
    return {
        "event_id": f"{user}-{ts}-{repeat}",
        "user_id": user,
        "session_id": f"{user}-{ts}",
        "type": "page_view",
        "ts": ts,
        "schema_version": 1,
        "url": "/",
        "category": "home",
        "dwell_ms": 1000,
        "scroll_depth": 0.1,
    }


class Traffic:
    """Publishes the generated history at a steady pace, remembering the latest event time
    sent: simulated users answer at that moment, so their events are never late."""

    def __init__(self, settings, events: list[dict]):
        self.settings, self.events = settings, events
        self.latest_ts = events[0]["ts"]
        self.done = threading.Event()
        self.error: BaseException | None = None

    def publisher(self, rate: float = 0.0) -> Publisher:
        topic = self.settings.kafka.topics.events
        return Publisher(
            self.settings.kafka.bootstrap_servers, topic.name, topic.partitions, rate, label="test"
        )

    def run(self) -> None:
        try:
            publisher = self.publisher(PACE)
            for n, event in enumerate(self.events):
                if n % HEARTBEAT == 0:
                    self.heartbeat(publisher, event["ts"])
                    waiting_since, repeat = time.monotonic(), 0
                    while event["ts"] - job_progress(self.settings) > MAX_LAG_MS:
                        time.sleep(0.2)
                        if time.monotonic() - waiting_since > WAITING_HEARTBEAT_S * (repeat + 1):
                            repeat += 1
                            self.heartbeat(publisher, event["ts"], repeat)
                publisher.send(event["user_id"], event_bytes(event))
                self.latest_ts = max(self.latest_ts, event["ts"])
            publisher.close()
        except BaseException as e:  # surfaced by the test thread
            self.error = e
        finally:
            self.done.set()

    @staticmethod
    def heartbeat(publisher: Publisher, ts: int, repeat: int = 0) -> None:
        for user in CLOCK_USERS:
            publisher.send(user, event_bytes(clock_event(user, ts, repeat)))
        publisher.flush()


class Users:
    """Simulated users: read the decisions of the experiment and send their answers.

    They read PostgreSQL `actions`, not the `actions` topic: the local broker holds back every
    committed record from read_committed consumers while any transaction on the partition is
    open, and a running exactly-once job always has one open (README, "The local broker")."""

    def __init__(self, settings, traffic: Traffic, responses: OfferResponses, window_ms: int):
        self.settings, self.traffic = settings, traffic
        self.responses, self.window_ms = responses, window_ms
        self.publisher = traffic.publisher()
        self.seen: set[str] = set()
        self.answered: dict[str, list[dict]] = {}  # decision id -> the events sent
        self.lag_ms: list[int] = []  # event time between a decision and its answer
        self.missed = 0  # answers that would have come after the attribution window

    def poll(self, wait_s: float = 0.5) -> int:
        """Answers the decisions written since the last poll; returns how many were new."""
        time.sleep(wait_s)
        with psycopg.connect(self.settings.postgres.conninfo(), row_factory=dict_row) as conn:
            decisions = conn.execute(
                "SELECT decision_id, user_id, ts, variant, delivered, payload FROM actions"
                " WHERE experiment = %s AND ts >= %s ORDER BY ts",
                (EXPERIMENT, START_TS_MS),
            ).fetchall()
        new = [d for d in decisions if d["decision_id"] not in self.seen]
        for decision in new:
            self.seen.add(decision["decision_id"])
            now = max(self.traffic.latest_ts, decision["ts"] + 1)
            if now >= decision["ts"] + self.window_ms:
                self.missed += 1
                continue
            events = self.responses.respond(decision, now)
            for event in events:
                self.publisher.send(event["user_id"], event_bytes(event))
            if events:
                self.answered[decision["decision_id"]] = events
                self.lag_ms.append(now - decision["ts"])
        self.publisher.flush()
        return len(new)


def archived(settings, event_ids: list[str]) -> int:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        return conn.execute(
            "SELECT count(*) FROM events WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchone()[0]


def job_progress(settings) -> int:
    """Event time up to which the job has profiled every clock user: the slowest of its
    parallel instances has processed the traffic that far."""
    clocks = [configured_subject(settings.privacy)(user) for user in CLOCK_USERS]
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT user_id, as_of_ts FROM user_profiles WHERE user_id = ANY(%s)"
            " AND as_of_ts BETWEEN %s AND %s",
            (clocks, START_TS_MS - 60_000, START_TS_MS + (DAYS + 1) * 86_400_000),
        ).fetchall()
    return min(ts for _, ts in rows) if len(rows) == len(CLOCK_USERS) else 0


def unmeasured(settings) -> int:
    """Decisions of the experiment still without an outcome."""
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        return conn.execute(
            "SELECT count(*) FROM actions a LEFT JOIN action_outcomes o USING (decision_id)"
            " WHERE a.experiment = %s AND a.ts >= %s AND o.decision_id IS NULL",
            (EXPERIMENT, START_TS_MS),
        ).fetchone()[0]


def wait_for(condition, timeout_s: float, what: str, users: Users | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        if users is not None:
            users.poll()
        else:
            time.sleep(0.5)


def everyone_gets(arm: str) -> Candidate:
    """A candidate policy giving `arm` to every user the logged policy decided for."""
    return Candidate.model_validate(
        {"name": arm, "experiment": EXPERIMENT, "rules": [{"arm": arm}], "otherwise": "control"}
    )


def purchase_times(events: list[dict]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for e in events:
        if e["type"] == "purchase":
            found.setdefault(e["user_id"], []).append(e["ts"])
    return found


@pytest.fixture
def experiment_settings(own_outputs, trained, tmp_path):
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENTS_YAML)
    actions = own_outputs.actions.model_copy(update={"experiments_file": str(experiments)})
    models = own_outputs.models.model_copy(update={"directory": str(trained.registry.directory)})
    generator = own_outputs.generator.model_copy(
        # In order and never late, so the history's purchases are exactly the organic outcomes;
        # every user allows marketing, so every user can be offered the discount.
        update={
            "start_ts_ms": START_TS_MS,
            "out_of_order_rate": 0.0,
            "late_rate": 0.0,
            "marketing_consent": 1.0,
        }
    )
    return without_recommendations(
        own_outputs.model_copy(
            update={"actions": actions, "models": models, "generator": generator}
        )
    )


def test_the_report_recovers_a_known_uplift_and_the_control_gets_nothing(
    experiment_settings, figures
):
    settings = experiment_settings
    window = settings.actions.attribution_window_ms
    history = EventGenerator(settings.generator, USERS, DAYS, SEED).generate()
    events = history.events
    traffic = Traffic(settings, events)

    # The run opens with a page view on every partition: its offsets are where the job starts.
    opening = traffic.publisher()
    for user in CLOCK_USERS:
        opening.send(user, event_bytes(clock_event(user, START_TS_MS - 60_000)))
    opened = opening.close()
    start, _ = opened.bounds()
    assert set(opened.start_offsets) == set(range(opened.partitions)), "a partition is unused"

    client = job.submit(settings, start)
    users = Users(settings, traffic, OfferResponses({"discount": ACCEPT}, seed=SEED), window)
    began = time.monotonic()
    try:
        wait_for(lambda: job_progress(settings) > 0, 180, "the job to profile the clock users")
        publishing = threading.Thread(target=traffic.run, daemon=True)
        publishing.start()
        while not traffic.done.is_set():
            users.poll()
        assert traffic.error is None, traffic.error

        # Drain: until every event, answers included, is processed and no decision is new.
        def settled() -> bool:
            sent = [e["event_id"] for e in events]
            sent += [e["event_id"] for answer in users.answered.values() for e in answer]
            if archived(settings, sent) < len(sent):
                return False
            return users.poll(wait_s=6) == 0

        wait_for(settled, 300, "the job to catch up", users)

        # Event time moves past every attribution window: each decision gets its outcome.
        closing = traffic.publisher()
        end = events[-1]["ts"] + window + 2 * 86_400_000
        for user in CLOCK_USERS:
            closing.send(user, event_bytes(clock_event(user, end)))
        closing.close()
        wait_for(lambda: unmeasured(settings) == 0, 180, "every outcome")
    finally:
        client.cancel().result()
        users.publisher.close()
    elapsed = time.monotonic() - began

    policy = load_policy(settings.actions.actions_file, settings.actions.experiments_file)
    [spec] = policy.experiments
    # The report of the run that starts with this test's stretch of event time.
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        run = Run.configured(spec, since=START_TS_MS)
        rows, result = experiment_report(conn, spec, settings.privacy, run)
        pre_period = spec.pre_period_days * DAY_MS
        covariates = histories(conn, run, rows, pre_period, archive_naming(settings.privacy))

    # Exact, per user: control users convert exactly when the history has them buying; treated
    # users when it does or when they accepted their first offer.
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        first = dict(
            conn.execute(
                "SELECT DISTINCT ON (user_id) user_id, decision_id FROM actions"
                " WHERE experiment = %s AND ts >= %s ORDER BY user_id, ts, decision_id",
                (EXPERIMENT, START_TS_MS),
            ).fetchall()
        )
        delivered_control = conn.execute(
            "SELECT count(*) FROM actions WHERE experiment = %s AND variant = 'control'"
            " AND delivered AND ts >= %s",
            (EXPERIMENT, START_TS_MS),
        ).fetchone()[0]
    # The generated history ignores offers: its purchases are what users do anyway.
    bought = purchase_times(events)
    organic = {}
    for variant, user, first_ts, converted, _ in rows:
        organic[user] = any(first_ts <= ts < first_ts + window for ts in bought.get(user, []))
        answer = users.answered.get(first[user], [])
        accepted = any(e["type"] == "purchase" for e in answer)
        assert converted == (organic[user] or (variant != "control" and accepted)), user
        # The covariate CUPED adjusts by: the user's purchases before exposure, from the archive.
        before = [ts for ts in bought.get(user, []) if first_ts - pre_period <= ts < first_ts]
        assert covariates[user].pre_purchases == len(before), user
    assert delivered_control == 0 and users.missed == 0

    # Statistical: the report's interval covers the true uplift ACCEPT * (1 - organic rate).
    base = sum(organic.values()) / len(organic)
    truth = ACCEPT * (1 - base)
    lift = result["against_control"]["discount"]
    low, high = lift["absolute_ci"]
    arms = result["arms"]
    print(
        f"\n  {len(events):,} events in {elapsed:.0f} s; {len(users.seen):,} decisions, "
        f"{len(users.answered):,} answered (event-time lag median "
        f"{sorted(users.lag_ms)[len(users.lag_ms) // 2] / 3.6e6:.1f} h); users: "
        + ", ".join(f"{v} {a['users']} ({a['rate']:.3f})" for v, a in arms.items())
        + f"; true uplift {truth:+.3f}, measured {lift['absolute_lift']:+.3f}"
        f" [{low:+.3f}, {high:+.3f}], always-valid p {lift['always_valid_p']:.2g}"
    )
    assert min(a["users"] for a in arms.values()) >= 80, arms
    assert low <= truth <= high
    assert low > 0, "the effect is large enough for the experiment to see"
    conversion = lift["conversion"]
    cuped_low, cuped_high = conversion["cuped"]["ci"]
    figures(
        f"conversion lift unadjusted {lift['absolute_lift']:+.3f} [{low:+.3f}, {high:+.3f}],"
        f" CUPED {conversion['cuped']['lift']:+.3f} [{cuped_low:+.3f}, {cuped_high:+.3f}]"
        f" (variance reduced {conversion['variance_reduction']:.0%}); true {truth:+.3f}"
    )
    assert cuped_low <= truth <= cuped_high
    assert not lift["balance"]["imbalanced"]

    # Off-policy, from the same logged decisions: the discount for everyone the policy decided
    # for, against the control for everyone, is the true uplift; a discount the experiment never
    # gave cannot be estimated.
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        units = logged_units(conn, Run.configured(spec, since=START_TS_MS))
    everyone = everyone_gets("discount")
    estimated = evaluate(everyone, units, propensities(spec), "control")
    off_policy = estimated.lift_over_control
    figures(
        f"off-policy lift of the discount for everyone {off_policy.value:+.3f}"
        f" [{off_policy.ci[0]:+.3f}, {off_policy.ci[1]:+.3f}] (doubly robust); true {truth:+.3f}"
    )
    assert estimated.supported and estimated.units == len(rows)
    assert off_policy.ci[0] <= truth <= off_policy.ci[1]
    refused = evaluate(everyone_gets("discount_20"), units, propensities(spec), "control")
    assert not refused.supported and refused.doubly_robust is None
    assert not result["sample_ratio"]["mismatch"]
