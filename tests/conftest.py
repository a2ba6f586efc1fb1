import json
import math
import os
import random
from dataclasses import dataclass

import pytest

from conf import settings as settings_module
from models.generator import EventGenerator
from models.registry import Artifact, Registry

# Event time in tests is fixed; the parser's clock is pinned to this instant.
TEST_NOW_MS = 1_800_000_000_000


FIGURES = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[FIGURES] = []


@pytest.fixture
def figures(request):
    """Call with a line a test reports (faults injected, records compared): the lines are
    printed in a section of their own at the end of the run, where the output of a passing
    test is not shown."""
    lines: list[str] = []
    yield lines.append
    if lines:
        request.config.stash[FIGURES].append((request.node.nodeid, lines))


def pytest_terminal_summary(terminalreporter, config):
    reports = config.stash.get(FIGURES, [])
    if reports:
        terminalreporter.section("figures reported by the tests")
        for nodeid, lines in reports:
            terminalreporter.write_line(nodeid)
            for line in lines:
                terminalreporter.write_line(f"  {line}")


@pytest.fixture(scope="session")
def settings():
    return settings_module.load("local")


@pytest.fixture(scope="session")
def small_history(settings):
    return EventGenerator(settings.generator, users=30, days=3, seed=11).generate()


@dataclass
class Trained:
    report: dict
    artifacts: dict[str, Artifact]
    manifest: dict
    registry: Registry
    samples: list
    collected: object  # models.train.Collected: the samples and cohort vectors of the run


@pytest.fixture(scope="session")
def trained(settings, tmp_path_factory):
    """`make train` at its default size on generated history, registered as version 1 in a
    folder of its own. One run (about four minutes on two cores) serves every tier but the unit
    one, which never trains: the model tests, the scoring pipeline test and the integration
    tests."""
    # Imported here, not at the top: Flink's thread-mode workers import this module with the
    # test functions they run, and scikit-learn's pybind11 extensions (scipy) deadlock there.
    from models.history import GeneratedHistory
    from models.train import collect, train

    m = settings.models
    history = GeneratedHistory(settings, m.train_users, m.train_days, m.train_seed)
    collected = collect(history, m, settings.profile)
    report, result = train(settings, collected)
    registry = Registry(tmp_path_factory.mktemp("models"))
    extras = {"rfm_breakpoints": result["rfm_breakpoints"].to_json()}
    manifest = registry.write(1, result["artifacts"], result["window"], extras)
    artifacts = {a.name: a for a in result["artifacts"]}
    return Trained(report, artifacts, manifest, registry, result["samples"], collected)


def without_ranked_items(payload: dict) -> dict:
    """An action's payload with the item ids of a recommendation list left out: they depend on
    what the ranking step knew of the catalogue when it ranked, not on the input alone."""
    return {**payload, "items": "ranked"} if isinstance(payload.get("items"), list) else payload


def event_bytes(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def pytest_collection_modifyitems(items):
    """Each tier's marker, from its folder: `-m "not integration"` and the like select tiers."""
    for item in items:
        path = str(item.fspath)
        for tier in ("models", "pipeline", "integration"):
            if f"{os.sep}{tier}{os.sep}" in path:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def rng():
    return random.Random(1234)


def assert_nearly_equal(actual, expected, path="", rel=1e-9):
    """Recursive equality where floats may differ by rounding: decayed sums added in another
    order are the same number up to the last bits."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12), (
            f"{path}: {actual} != {expected}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{path}: keys differ"
        for key in expected:
            assert_nearly_equal(actual[key], expected[key], f"{path}.{key}", rel)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: {len(actual)} != {len(expected)} items"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_nearly_equal(a, e, f"{path}[{i}]", rel)
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
