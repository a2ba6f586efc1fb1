"""`make run`: generate a fresh batch of events, run the profile job over exactly that batch in
the local Flink MiniCluster, and print what happened: records accounted for, cohorts against the
hidden archetypes, the top users by each learned score and lead score, the top users by each
model-free propensity and a few profiles.

`make run FILE=... MAPPING=...`: the same over your own log (replayed as `make replay` does):
rows accounted for, dead letters by reason, cohorts, top users and standard RFM."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from conf import settings as settings_module
from conf.settings import Settings
from jobs import erasure, profile
from jobs.generate import GenerateSummary, generate
from jobs.publish import PublishReport, iter_topic
from jobs.replay import replay
from udfs.events import DeadLetter
from udfs.pseudonyms import configured_subject, identity

PROPENSITIES = (
    "propensity_purchase",
    "propensity_add_to_cart",
    "propensity_checkout_start",
    "propensity_churn",
)


# How long the run waits for more erasure records once none comes (they are committed with
# the job's last checkpoint, before it ends).
ERASURES_IDLE_S = 3.0


def read_dead_letters(
    config: Settings,
    source_topic: str,
    contains: Callable[[int, int], bool],
    timeout_s: float = 15.0,
) -> dict[str, DeadLetter]:
    """Committed dead letters whose source lies in `contains(partition, offset)`, by id.

    Reads the whole dead-letter topic: end offsets are not trusted (see README). A repeated id is
    the same record again (the local broker shows records of aborted transactions), so it is kept
    once.
    """
    topic = config.kafka.topics.events_dlq.name
    found: dict[str, DeadLetter] = {}
    for message in iter_topic(config.kafka.bootstrap_servers, topic, idle_timeout_s=timeout_s):
        letter = DeadLetter.from_json(message.value)
        if message.key != letter.dead_letter_id.encode():
            raise ValueError(
                f"dead letter keyed {message.key!r} carries id {letter.dead_letter_id}"
            )
        source = letter.source
        if source.topic == source_topic and contains(source.partition, source.offset):
            found[letter.dead_letter_id] = letter
    return found


def archived_rows(config: Settings, batch: PublishReport, event_ids: list[str]) -> int:
    """Rows of this batch: its event ids, read from its offsets. Offsets alone are not enough:
    the local broker keeps data in memory, so after a restart offsets start again at 0."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT source_topic, source_partition, source_offset FROM events"
            " WHERE event_id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    return sum(1 for topic, p, o in rows if topic == batch.topic and batch.contains(p, o))


class Names:
    """How the run's users (by their ids) are named in the archive and in the analytical
    outputs: by their ids or by pseudonyms (privacy.pseudonymize, pseudonymize_archive)."""

    def __init__(self, config: Settings, ids: set[str]):
        self.ids = ids
        self.in_outputs = configured_subject(config.privacy)
        archive_pseudonymized = config.privacy.pseudonymize_archive
        self.in_archive = self.in_outputs if archive_pseudonymized else identity

    def from_archive(self, names: set[str]) -> set[str]:
        """The ids of the run's users named so in the archive."""
        return {user for user in self.ids if self.in_archive(user) in names}

    def outputs(self, ids: set[str]) -> set[str]:
        return {self.in_outputs(user) for user in ids}


def archetypes(config: Settings, summary: GenerateSummary) -> dict[str, str]:
    """The hidden archetype of each user of the run (the generator's ground truth), by id."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        truth = conn.execute(
            "SELECT user_id, archetype FROM ground_truth_users WHERE run_id = %s",
            (summary.run_id,),
        ).fetchall()
    return dict(truth)


def with_archetypes(config: Settings, summary: GenerateSummary, sql: str) -> list[dict]:
    """The rows of `sql` (parameters: `users`, the run's, as the outputs name them, and
    `start`, the start of its event time), with each user's archetype."""
    subject = configured_subject(config.privacy)
    known = {subject(user): archetype for user, archetype in archetypes(config, summary).items()}
    parameters = {"users": list(known), "start": config.generator.start_ts_ms}
    with psycopg.connect(config.postgres.conninfo(), row_factory=dict_row) as conn:
        rows = conn.execute(sql, parameters).fetchall()
    return [{**row, "archetype": known[row["user_id"]]} for row in rows]


def batch_profiles(config: Settings, summary: GenerateSummary) -> list[dict]:
    """This run's profiles (updated within its stretch of event time) with each user's hidden
    archetype from the generator's ground truth."""
    return with_archetypes(
        config,
        summary,
        "SELECT * FROM user_profiles WHERE user_id = ANY(%(users)s) AND as_of_ts >= %(start)s",
    )


def active_users(config: Settings, event_ids: list[str], names: Names) -> set[str]:
    """Users of this batch with behaviour (a consent update alone makes no profile), by id."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT DISTINCT user_id FROM events"
            " WHERE event_id = ANY(%s) AND type <> 'consent_update'",
            (event_ids,),
        ).fetchall()
    return names.from_archive({user for (user,) in rows})


def closed_sessions(config: Settings, summary: GenerateSummary) -> tuple[int, int]:
    # Session ids are random UUIDs, one user's each.
    with psycopg.connect(config.postgres.conninfo()) as conn:
        return conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE s.abandoned) FROM user_sessions s"
            " JOIN ground_truth_sessions t ON t.run_id = %s AND t.session_id = s.session_id",
            (summary.run_id,),
        ).fetchone()


def batch_scores(config: Settings, summary: GenerateSummary) -> list[dict]:
    """This run's latest scores, lead scores and cohort moves per user, with the archetype."""
    return with_archetypes(
        config,
        summary,
        "SELECT s.*, l.score AS lead_score, l.intent, l.capacity, l.modifiers,"
        "  (SELECT count(*) FROM cohort_moves m WHERE m.user_id = s.user_id"
        "  AND m.ts >= %(start)s AND m.reason <> 'first') AS moves"
        " FROM user_scores s JOIN leads l ON l.user_id = s.user_id"
        " WHERE s.user_id = ANY(%(users)s) AND s.ts >= %(start)s",
    )


def print_cohorts(scores: list[dict]) -> None:
    versions = sorted({s["model_version"] for s in scores}, key=lambda v: v or 0)
    if versions == [None]:
        print("  no model version registered: run `make train` for cohorts and learned scores")
        return
    print(f"  cohorts (model version {', '.join(str(v) for v in versions)}) and hidden archetypes")
    by_cohort: dict[str, Counter] = {}
    for s in scores:
        by_cohort.setdefault(s["cohort_name"] or "-", Counter())[s["archetype"]] += 1
    for name, archetypes in sorted(by_cohort.items(), key=lambda kv: -kv[1].total()):
        mix = ", ".join(f"{a} {n}" for a, n in archetypes.most_common(3))
        print(f"      {name:<32}{archetypes.total():>5} users   {mix}")
    moved = [s for s in scores if s["moves"]]
    print(f"  users who moved cohort {len(moved):>5}  ({sum(s['moves'] for s in moved)} moves)")


def print_learned(scores: list[dict], n: int = 5) -> None:
    for column in ("abandonment", "drift", "purchase", "lead_score"):
        ranked = [s for s in scores if s[column] is not None]
        print(f"  top users by {column.replace('_', ' ')}")
        for s in sorted(ranked, key=lambda s: (-s[column], s["user_id"]))[:n]:
            extra = (
                f", modifiers {s['modifiers']}" if column == "lead_score" and s["modifiers"] else ""
            )
            print(
                f"      {s['user_id']}  {s[column]:.3f}  ({s['archetype']}, "
                f"{s['cohort_name'] or 'no cohort'}{extra})"
            )


def print_actions(config: Settings, users: set[str]) -> None:
    """The decisions of this run per action and arm, and their outcomes so far."""
    start = config.generator.start_ts_ms
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT a.action, coalesce(a.experiment || '/' || a.variant, '-'), a.delivered,"
            "  count(*), count(o.decision_id), count(*) FILTER (WHERE o.converted)"
            " FROM actions a LEFT JOIN action_outcomes o USING (decision_id)"
            " WHERE a.ts >= %s AND a.user_id = ANY(%s)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2",
            (start, list(users)),
        ).fetchall()
    print("  actions decided (conf/actions.yaml, conf/experiments.yaml)")
    print(
        f"      {'action':<24}{'experiment/variant':<34}{'sent':>6}{'decided':>9}"
        f"{'outcome':>9}{'bought':>8}"
    )
    for action, arm, delivered, decided, measured, converted in rows:
        sent = "yes" if delivered else "no"
        print(f"      {action:<24}{arm:<34}{sent:>6}{decided:>9,}{measured:>9,}{converted:>8,}")
    if not rows:
        print("      none")


def print_recommendations(config: Settings, users: set[str], n: int = 3) -> None:
    """How many of this run's users have a list, and the first few lists, with the signals
    behind each item."""
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT r.user_id, r.blend, r.items FROM recommendations r"
            " WHERE r.user_id = ANY(%s) ORDER BY r.user_id",
            (list(users),),
        ).fetchall()
    print(f"  recommendations      {len(rows):,} users with a list (docs/recommendations.md)")
    for user_id, blend, items in rows[:n]:
        shown = ", ".join(f"{i['item_id']} ({'+'.join(i['reasons'])})" for i in items[:4])
        print(f"      {user_id} [{blend}] {shown}{', ...' if len(items) > 4 else ''}")


def print_top(profiles: list[dict], n: int = 5) -> None:
    for column in PROPENSITIES:
        print(f"  top users by {column.removeprefix('propensity_')}")
        for p in sorted(profiles, key=lambda p: (-p[column], p["user_id"]))[:n]:
            print(
                f"      {p['user_id']}  {p[column]:.3f}  ({p['archetype']}, "
                f"{p['events']} events, {p['sessions']} sessions)"
            )


def print_profiles(profiles: list[dict]) -> None:
    """One profile per archetype, the one with the most events."""
    by_archetype: dict[str, dict] = {}
    for p in sorted(profiles, key=lambda p: (-p["events"], p["user_id"])):
        by_archetype.setdefault(p["archetype"], p)
    print("  a profile per hidden archetype")
    # Ids or pseudonyms (privacy.pseudonymize): the column fits the longest.
    w = max((len(p["user_id"]) for p in by_archetype.values()), default=7) + 2
    print(
        f"      {'user':<{w}}{'archetype':<17}{'engage':>7}{'intent':>7}{'price':>7}"
        f"{'affinity':>9}  {'category':<12}{'rfm_p':>6}{'rfm_e':>6}{'dev':>6}  top action"
    )
    for archetype, p in sorted(by_archetype.items()):
        print(
            f"      {p['user_id']:<{w}}{archetype:<17}{p['engagement_score']:>7.2f}"
            f"{p['intent_strength']:>7.2f}{p['price_sensitivity']:>7.2f}"
            f"{p['category_affinity']:>9.2f}  {p['top_category'] or '-':<12}"
            f"{p['rfm_purchase_score']:>6.2f}{p['rfm_engagement_score']:>6.2f}"
            f"{p['deviation']:>6.2f}  {p['top_propensity']}"
        )


def log_rows(config: Settings, sql: str, users: set[str]) -> list[dict]:
    with psycopg.connect(config.postgres.conninfo(), row_factory=dict_row) as conn:
        return conn.execute(sql, (list(users),)).fetchall()


def forgotten_users(config: Settings, event_ids: list[str], names: Names) -> set[str]:
    """Users of these events quiet for the long-term retention before the latest of them (less
    the watermark's bound): the job forgot them, so they have no profile row."""
    p = config.profile
    with psycopg.connect(config.postgres.conninfo()) as conn:
        rows = conn.execute(
            "WITH batch AS (SELECT user_id, ts_ms FROM events WHERE event_id = ANY(%s)"
            "  AND type <> 'consent_update')"
            " SELECT user_id FROM batch GROUP BY user_id"
            " HAVING max(ts_ms) + %s <= (SELECT max(ts_ms) FROM batch) - %s",
            (event_ids, p.long_term_ttl_ms, p.out_of_orderness_ms),
        ).fetchall()
    return names.from_archive({user for (user,) in rows})


@dataclass
class JobRun:
    """The profile job run over exactly one published batch, and what it archived and
    dead-lettered of it."""

    seconds: float
    archived: int
    dead_letters: dict[str, DeadLetter]

    def by_reason(self) -> Counter:
        return Counter(letter.reason.value for letter in self.dead_letters.values())


def run_job(config: Settings, batch: PublishReport, event_ids: list[str], what: str) -> JobRun:
    start, stop = batch.bounds()
    print(
        f"[run] profile job over {batch.sent:,} {what} "
        f"(parallelism {config.flink.parallelism}, {config.flink.execution_mode} mode)",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    profile.run(config, start, stop)
    seconds = time.monotonic() - began
    # The erasures the run asked for, once their records are committed (jobs/erasure.py).
    erasure.Executor(config).run(ERASURES_IDLE_S, lambda line: print(line, file=sys.stderr))
    return JobRun(
        seconds,
        archived_rows(config, batch, event_ids),
        read_dead_letters(config, batch.topic, batch.contains),
    )


def run_log(config: Settings, file: Path, mapping: Path) -> int:
    """Replays a log, runs the profile job over exactly its records and summarises them."""
    replayed = replay(config, file, mapping)
    batch = replayed.published
    run = run_job(config, batch, replayed.event_ids, f"events of {file}")
    rows, letters, seconds = run.archived, run.dead_letters, run.seconds
    by_reason = run.by_reason()
    names = Names(config, replayed.users)
    in_outputs = names.outputs(replayed.users)
    profiles = log_rows(config, "SELECT * FROM user_profiles WHERE user_id = ANY(%s)", in_outputs)
    scores = log_rows(
        config,
        "SELECT s.*, l.score AS lead_score FROM user_scores s JOIN leads l USING (user_id)"
        " WHERE s.user_id = ANY(%s)",
        in_outputs,
    )
    dlq = config.kafka.topics.events_dlq.name
    print()
    print(f"run summary: {file}")
    print(f"  rows in the log      {replayed.rows:>9,}")
    print(f"  not events (replay)  {replayed.dead:>9,}  topic {dlq}")
    for reason, count in sorted(replayed.dead_letters.items()):
        print(f"      {reason:<28}{count:>7,}")
    print(f"  events published     {batch.sent:>9,}  topic {batch.topic}")
    print(f"  rows written (PG)    {rows:>9,}  table events")
    print(f"  dead-lettered (job)  {len(letters):>9,}  topic {dlq}")
    for reason, count in sorted(by_reason.items()):
        print(f"      {reason:<28}{count:>7,}")
    dormant = sum(1 for p in profiles if p["dormant"])
    forgotten = forgotten_users(config, replayed.event_ids, names)
    active = active_users(config, replayed.event_ids, names)
    print(
        f"  profiles (PG)        {len(profiles):>9,}  table user_profiles ({dormant:,} dormant: "
        "quiet longer than profile.ttl_ms)"
    )
    print(
        f"  users forgotten      {len(forgotten):>9,}  quiet longer than "
        "profile.long_term_ttl_ms before the log ended"
    )
    print(f"  job time             {seconds:>8.1f}s  ({batch.sent / seconds:,.0f} events/s)")
    ok = (
        replayed.rows == batch.sent + replayed.dead
        and rows + len(letters) == batch.sent
        and {p["user_id"] for p in profiles} == names.outputs(active - forgotten)
    )
    print(f"  accounted for        {'all rows' if ok else 'MISMATCH'}")
    print()
    if scores:
        cohorts = Counter(s["cohort_name"] or "-" for s in scores)
        version = max(s["model_version"] or 0 for s in scores)
        print(f"  cohorts (model version {version})")
        for name, n in cohorts.most_common():
            print(f"      {name:<32}{n:>6} users")
        print()
        for column in ("abandonment", "drift", "purchase", "lead_score"):
            ranked = [s for s in scores if s[column] is not None]
            print(f"  top users by {column.replace('_', ' ')}")
            for s in sorted(ranked, key=lambda s: (-s[column], s["user_id"]))[:5]:
                print(f"      {s['user_id']:<12}  {s[column]:.3f}  ({s['cohort_name'] or '-'})")
        print()
    buyers = [p for p in profiles if p["purchase_count"]]
    print(f"  standard RFM: {len(buyers):,} customers with a purchase; the top by R+F+M")
    print(f"      {'user':<12}{'orders':>7}{'spend':>10}{'mean':>9}{'days':>7}  R F M  weighted")
    top = sorted(
        buyers,
        key=lambda p: (-((p["rfm_r"] or 0) + (p["rfm_f"] or 0) + (p["rfm_m"] or 0)), p["user_id"]),
    )
    for p in top[:8]:
        scores_text = (
            f"{p['rfm_r']} {p['rfm_f']} {p['rfm_m']}  {p['rfm_standard_score']:.2f}"
            if p["rfm_r"] is not None
            else "-  (no breakpoints: run make train)"
        )
        print(
            f"      {p['user_id']:<12}{p['purchase_count']:>7}{p['spend_total']:>10,.2f}"
            f"{p['spend_mean']:>9,.2f}{p['days_since_purchase']:>7.0f}  {scores_text}"
        )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.local_run", description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--file", type=Path, help="your own log, CSV or JSONL (.gz too)")
    parser.add_argument("--mapping", type=Path, help="its replay mapping (conf/mappings/)")
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    if args.file or args.mapping:
        if not (args.file and args.mapping):
            parser.error("a log needs both --file and --mapping")
        if not args.file.exists():
            parser.error(f"no such file: {args.file}")
        try:
            return run_log(config, args.file, args.mapping)
        except settings_module.ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    summary = generate(config, users=args.users, days=args.days, seed=args.seed)
    batch = summary.publish
    run = run_job(config, batch, summary.event_ids, f"records of {batch.topic}")
    rows, letters, seconds = run.archived, run.dead_letters, run.seconds
    by_reason = run.by_reason()
    names = Names(config, set(archetypes(config, summary)))
    active = active_users(config, summary.event_ids, names)
    # Only users with events in this batch: a user without any keeps an older run's row.
    profiled = names.outputs(active)
    profiles = [p for p in batch_profiles(config, summary) if p["user_id"] in profiled]
    sessions, abandoned = closed_sessions(config, summary)
    scores = [s for s in batch_scores(config, summary) if s["user_id"] in profiled]
    print()
    print("profile run summary")
    print(
        f"  events generated     {summary.valid + summary.invalid:>9,}  "
        f"({summary.users:,} users, {summary.sessions:,} sessions, run {summary.run_id})"
    )
    print(f"  valid                {summary.valid:>9,}")
    print(f"  malformed mixed in   {summary.invalid:>9,}")
    print(f"  rows written (PG)    {rows:>9,}  table events")
    print(f"  dead-lettered        {len(letters):>9,}  topic {config.kafka.topics.events_dlq.name}")
    for reason, count in sorted(by_reason.items()):
        print(f"      {reason:<28}{count:>7,}")
    print(f"  profiles (PG)        {len(profiles):>9,}  table user_profiles, topic profiles")
    print(f"  sessions closed      {sessions:>9,}  table user_sessions ({abandoned:,} abandoned)")
    print(f"  scored users (PG)    {len(scores):>9,}  tables user_scores, leads, cohort_moves")
    print(f"  job time             {seconds:>8.1f}s  ({summary.valid / seconds:,.0f} events/s)")
    ok = (
        rows == summary.valid
        and len(letters) == summary.invalid
        and sessions == summary.sessions
        and len(profiles) == len(active)
        and len(scores) == len(active)
    )
    print(f"  accounted for        {'all records' if ok else 'MISMATCH'}")
    print()
    print_cohorts(scores)
    print()
    print_learned(scores)
    print()
    print_actions(config, active)
    print()
    print_recommendations(config, active)
    print()
    print_top(profiles)
    print()
    print_profiles(profiles)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
