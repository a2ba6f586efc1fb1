"""Flink's Prometheus reporter (`flink.prometheus_ports`) during the stream run's profile job:
the endpoints a Prometheus server would scrape serve the job's own counters and levels, the
Kafka source's lag and the checkpoints' durations (docs/operations.md)."""

# The job's own metrics (udfs/user_pipeline.py counters, jobs/profile.py levels).
OWN = (
    "duplicate_events",
    "late_events_dead_lettered",
    "profiles_purged",
    "profiles_expired",
    "actions_decided",
    "refused_without_marketing_consent",
    "model_version",
    "policy_sequence",
)


def values(families: dict[str, list], suffix: str) -> list[float]:
    return [s.value for name, samples in families.items() if name.endswith(suffix) for s in samples]


def test_prometheus_is_served_the_jobs_own_counters_lag_and_checkpoints(stream_run, figures):
    scraped = stream_run.scraped
    assert scraped, "no endpoint of flink.prometheus_ports answered while the job ran"
    missing = [name for name in OWN if not values(scraped, f"_{name}")]
    assert missing == [], f"not served: {missing}"
    # Every subtask scores with the registered version, and decided something.
    assert set(values(scraped, "_model_version")) == {1.0}
    assert sum(values(scraped, "_actions_decided")) > 0
    lag = values(scraped, "_pendingRecords") or values(scraped, "_records_lag_max")
    assert lag, "the Kafka source's lag is not served"
    checkpoints = values(scraped, "_lastCheckpointDuration")
    assert checkpoints and max(checkpoints) >= 0
    figures(
        f"{len(scraped)} metric families served; actions decided "
        f"{sum(values(scraped, '_actions_decided')):.0f}, last checkpoint "
        f"{max(checkpoints):.0f} ms"
    )
