"""A small `make train` registers its models and cohorts in PostgreSQL."""

import psycopg

from models.history import GeneratedHistory
from models.registry import Registry, register_in_postgres
from models.train import collect, train


def test_training_registers_every_model_and_cohort(local_stack, tmp_path):
    settings = local_stack
    history = GeneratedHistory(settings, users=90, days=24, seed=5)
    report, result = train(settings, collect(history, settings.models, settings.profile))
    registry = Registry(tmp_path)
    manifest = registry.write(registry.next_version(), result["artifacts"], result["window"])
    register_in_postgres(settings, manifest)
    register_in_postgres(settings, manifest)  # idempotent
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT name, sha256, features, trained_from, trained_to FROM model_registry"
            " WHERE version = %s",
            (manifest["version"],),
        ).fetchall()
        cohorts = conn.execute(
            "SELECT cohort, name, size FROM cohorts WHERE model_version = %s ORDER BY cohort",
            (manifest["version"],),
        ).fetchall()
    assert {r[0] for r in rows} == set(manifest["models"])
    for name, sha256, features, trained_from, trained_to in rows:
        entry = manifest["models"][name]
        assert (sha256, features) == (entry["sha256"], entry["features"])
        assert trained_from < trained_to
    assert [(c, n, s) for c, n, s in cohorts] == [
        (p["cohort"], p["name"], p["size"]) for p in report["cohorts"]["profiles"]
    ]
