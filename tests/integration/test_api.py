"""The REST API and dashboard (jobs/api.py) served by uvicorn over the stream run's outputs in
the real PostgreSQL: property-based tests generated from its OpenAPI schema (schemathesis), the
keys it takes and refuses, answers equal to the rows they come from, with their freshness, and
the dashboard in Debian's headless Chromium, every panel drawn from the run."""

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import hypothesis
import psycopg
import pytest
import schemathesis
import uvicorn
from psycopg.rows import dict_row
from schemathesis import GenerationMode
from selenium import webdriver
from selenium.webdriver.chrome.options import Options as ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from conf import stack
from jobs import api, report
from jobs.publish import iter_topic
from udfs.events import ActionRequest, Event, EventParser, EventType, SourceRef
from udfs.pseudonyms import configured_subject

KEY = "test-key-0123456789abcdef"
EXAMPLES = 60  # generated requests per operation and mode
# The server's clock, pinned: freshness is measured against it.
NOW_MS = 1_800_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(stream_run):
    """The stream run's settings with an events topic of the API's own: the requests it sends
    stay out of the run's input, which other modules read."""
    settings = stream_run.settings.with_own_topics(uuid.uuid4().hex[:8], ("events",))
    stack.ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def server(served, monkeypatch_module):
    monkeypatch_module.setenv("BEHAVIOR_API_KEYS", f"{KEY},another-key-0123456789")
    app = api.create_app(served, now_ms=lambda: NOW_MS)
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_every_operation_meets_its_schema_whatever_it_is_asked(server, figures):
    """Requests schemathesis generates from the served OpenAPI schema, valid and not, for every
    operation: no server error, every answer as the schema says (status, content type, body),
    bad input refused with a 4xx. (Its pytest plugin does not run under pytest 9.2, so the
    generated cases run through Hypothesis here.)"""
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    checked = []
    for found in schema.get_all_operations():
        operation = found.ok()
        for mode in GenerationMode if takes_input(operation) else [GenerationMode.POSITIVE]:

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def meets_the_schema(case):
                case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})

            meets_the_schema()
        checked.append(operation.label)
    assert len(checked) == 10, checked
    figures(f"{len(checked)} operations, up to {EXAMPLES} valid and invalid requests each")


def takes_input(operation) -> bool:
    """Whether a request to it can be invalid at all (the key headers aside)."""
    own_headers = [h for h in operation.headers if h.name not in ("Authorization", "X-API-Key")]
    inputs = len(operation.path_parameters) + len(operation.query) + len(own_headers)
    return inputs > 0 or operation.body is not None and len(operation.body) > 0


def test_only_requests_with_a_valid_key_are_answered(server, client):
    user = "u000007"
    path = f"/v1/users/{user}/actions"
    assert httpx.get(f"{server}{path}").status_code == 401
    wrong = httpx.get(f"{server}{path}", headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "a valid API key is required"}
    assert wrong.headers["www-authenticate"] == "Bearer"
    other = httpx.get(f"{server}{path}", headers={"X-API-Key": "another-key-0123456789"})
    assert other.status_code == 200
    assert client.get(path).status_code == 200
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}, "health needs no key"


def rows(settings, sql: str, params=()) -> list[dict]:
    with psycopg.connect(settings.postgres.conninfo(), row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_users_profile_and_scores_are_their_rows_with_their_freshness(stream_run, client):
    settings = stream_run.settings
    subject = configured_subject(settings.privacy)
    user = stream_run.history.users[7].user_id
    [profile] = rows(settings, "SELECT * FROM user_profiles WHERE user_id = %s", (subject(user),))
    answer = client.get(f"/v1/users/{user}/profile").json()
    assert answer["user_id"] == user and answer["version"] == profile["version"]
    assert answer["details"] == profile["details"]
    assert answer["columns"]["engagement_score"] == profile["engagement_score"]
    age = NOW_MS - profile["as_of_ts"]
    stale = age > settings.api.stale_after_ms
    assert answer["freshness"] == {"as_of_ts": profile["as_of_ts"], "age_ms": age, "stale": stale}

    [scores] = rows(settings, "SELECT * FROM user_scores WHERE user_id = %s", (subject(user),))
    answer = client.get(f"/v1/users/{user}/scores").json()
    assert (answer["cohort_name"], answer["purchase"]) == (
        scores["cohort_name"],
        scores["purchase"],
    )
    assert answer["ranked"] == scores["ranked"] and answer["freshness"]["as_of_ts"] == scores["ts"]


def test_unknown_users_and_bad_input_get_a_4xx_with_the_reason(client):
    missing = client.get("/v1/users/nobody-at-all/profile")
    assert missing.status_code == 404 and missing.json() == {"detail": "no profile for this user"}
    too_many = client.get("/v1/users/u000007/actions", params={"limit": 100_000})
    assert too_many.status_code == 422
    assert "less than or equal to 200" in too_many.text
    unknown = client.get("/v1/experiments/no-such-experiment")
    assert unknown.status_code == 404 and "no-such-experiment" in unknown.json()["detail"]


def test_an_action_asked_for_goes_to_the_job_as_an_event_of_the_contract(served, client):
    path = "/v1/users/u000011/actions"
    asked = {"action": "help_tip"}
    first = client.post(path, json=asked, headers={"Idempotency-Key": "support-ticket-4711"})
    again = client.post(path, json=asked, headers={"Idempotency-Key": "support-ticket-4711"})
    assert first.status_code == again.status_code == 202
    assert (
        first.json()
        == {"event_id": "api-support-ticket-4711", "action": "help_tip", "status": "accepted"}
        == again.json()
    )
    unknown = client.post(path, json={"action": "free_money"}, headers={"Idempotency-Key": "k2"})
    assert unknown.status_code == 404 and "free_money" in unknown.json()["detail"]
    no_key = client.post(path, json=asked)
    assert no_key.status_code == 422 and "Idempotency-Key" in no_key.text
    c = served.events
    parser = EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms, now_ms=lambda: NOW_MS)
    topic = served.kafka.topics.events.name
    records = list(iter_topic(served.kafka.bootstrap_servers, topic, idle_timeout_s=3))
    mine = [r for r in records if b"support-ticket-4711" in r.value]
    assert len(mine) == 2, "both sent; the job decides the event id once"
    for record in mine:
        event = parser.parse(record.value, SourceRef("events", record.partition, record.offset))
        assert isinstance(event, Event), event
        assert (event.type, event.user_id, event.event_id) == (
            EventType.ACTION_REQUEST,
            "u000011",
            "api-support-ticket-4711",
        )
        assert event.data == ActionRequest("help_tip", "support-ticket-4711")
        assert record.key == b"u000011", "in the user's partition, after their events"


def test_lists_actions_and_cohorts_are_what_the_tables_hold(stream_run, client):
    settings = stream_run.settings
    [listed] = rows(settings, "SELECT user_id, items FROM recommendations LIMIT 1")
    answer = client.get(f"/v1/users/{listed['user_id']}/recommendations").json()
    assert answer["items"] == listed["items"]

    [acted] = rows(
        settings, "SELECT user_id, count(*) AS n FROM actions GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    )
    decided = client.get(f"/v1/users/{acted['user_id']}/actions", params={"limit": 200}).json()
    assert len(decided["actions"]) == acted["n"]
    times = [a["ts"] for a in decided["actions"]]
    assert times == sorted(times, reverse=True)

    sizes = rows(
        settings,
        "SELECT model_version, cohort, count(*) AS n FROM user_scores"
        " WHERE cohort IS NOT NULL GROUP BY 1, 2",
    )
    answered = {
        (c["model_version"], c["cohort"]): c["users"] for c in client.get("/v1/cohorts").json()
    }
    assert sizes and all(answered[r["model_version"], r["cohort"]] == r["n"] for r in sizes)


def test_an_experiments_report_is_the_one_make_report_computes(stream_run, client):
    from conf.policy import load_policy

    settings = stream_run.settings
    policy = load_policy(settings.actions.actions_file, settings.actions.experiments_file)
    spec = policy.experiments[0]
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        _, expected = report.experiment_report(conn, spec, settings.privacy)
    assert expected["against_control"], "the run's experiment has arms to compare"
    answer = client.get(f"/v1/experiments/{spec.name}").json()
    assert answer == {"experiment": spec.name, **json.loads(json.dumps(expected))}


PANELS = (
    "panel-events",
    "panel-funnel",
    "panel-cohorts",
    "panel-scores",
    "panel-actions",
    "panel-experiments",
    "panel-alerts",
)
# Where the dashboard's screenshot is kept after the run.
SCREENSHOT = Path(".local") / "test-artifacts" / "dashboard.png"


@pytest.fixture(scope="module")
def browser():
    options = ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1500,1900")
    driver = webdriver.Chrome(service=ChromeService("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def refreshes(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0)


def test_the_dashboard_draws_every_panel_from_the_run_and_keeps_refreshing(
    server, browser, figures
):
    browser.get(f"{server}/dashboard#key={KEY}")
    WebDriverWait(browser, 60).until(lambda d: refreshes(d) >= 1)
    assert "key=" not in browser.current_url, "the key leaves the address bar"
    drawn = {}
    for panel in PANELS:
        section = browser.find_element(By.ID, panel)
        drawn[panel] = int(section.get_attribute("data-rows"))
        charts = section.find_elements(By.CSS_SELECTOR, ".plot .main-svg")
        cells = section.find_elements(By.CSS_SELECTOR, "tbody td")
        assert charts or cells, f"{panel}: nothing drawn"
    assert all(drawn.values()), f"panels without data: {drawn}"
    first = refreshes(browser)
    WebDriverWait(browser, 30).until(lambda d: refreshes(d) > first)
    assert browser.find_element(By.ID, "status").text.startswith("latest window ")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    figures(f"dashboard panels and their data points: {drawn}; screenshot {SCREENSHOT}")


def test_the_dashboard_asks_for_a_key_and_says_when_it_is_refused(server, browser):
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server}/dashboard#key=wrong-key-0123456789")
    WebDriverWait(browser, 30).until(lambda d: "refused" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "login").is_displayed()
