import json
import os
import random

import pytest

from conf import settings as settings_module
from models.generator import EventGenerator

# Event time in tests is fixed; the parser's clock is pinned to this instant.
TEST_NOW_MS = 1_800_000_000_000


@pytest.fixture(scope="session")
def settings():
    return settings_module.load("local")


@pytest.fixture(scope="session")
def small_history(settings):
    return EventGenerator(settings.generator, users=30, days=3, seed=11).generate()


def event_bytes(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}pipeline{os.sep}" in path:
            item.add_marker(pytest.mark.pipeline)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def rng():
    return random.Random(1234)
