"""`make serve`: the REST API over what the jobs wrote to PostgreSQL, with its OpenAPI schema at
`/openapi.json` and interactive documentation at `/docs`, and the live dashboard at `/dashboard`
(jobs/dashboard.py, docs/api.md).

A user is asked for by their id; the analytical tables name them by pseudonym
(udfs/pseudonyms.py), so the server computes it with the deployment's key, and reads the lists
and actions (which carry ids) by the id. Consent needs no check of its own here: a user who
refused analytics has no profile or scores, one who refused personalization no list.

Every answer about a user says how fresh it is: the event time of the profile it comes from,
its age by the server's clock, and whether that is older than `api.stale_after_ms`. Every
route but `/health` wants an API key (`Authorization: Bearer <key>` or `X-API-Key`). Reads
share a pool of `api.pool_min`..`pool_max` connections."""

import argparse
import hmac
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from kafka import KafkaProducer
from kafka.errors import KafkaError
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from conf import settings as settings_module
from conf.policy import load_policy
from conf.settings import API_KEYS_VARIABLE, Settings, local_secret
from jobs import dashboard, lead_report, report
from udfs.pseudonyms import configured_subject

# Plotly's browser bundle, shipped in its Python package: no download at run time.
PLOTLY_JS = resources.files("plotly").joinpath("package_data", "plotly.min.js")
# A user id as the contract allows it (udfs/schemas/v1/envelope.json).
UserId = Annotated[str, Path(min_length=1, max_length=128, description="the user's id")]


# ------------------------------------------------------------------ responses


class Freshness(BaseModel):
    as_of_ts: int = Field(description="event time (epoch ms) of the profile the answer is from")
    age_ms: int = Field(description="how long before the server's clock that was")
    stale: bool = Field(description="older than api.stale_after_ms")


class Profile(BaseModel):
    user_id: str
    version: int
    events: int
    sessions: int
    columns: dict[str, Any] = Field(description="the profile's typed columns (docs/profiles.md)")
    details: dict[str, Any]
    freshness: Freshness


class Scores(BaseModel):
    user_id: str
    model_version: int | None
    cohort: int | None
    cohort_name: str | None
    abandonment: float | None
    drift: float | None
    purchase: float | None
    top_score: str
    ranked: list[dict[str, Any]]
    lead_score: float | None
    freshness: Freshness


class Recommendation(BaseModel):
    item_id: str
    score: float
    reasons: list[str]


class Recommendations(BaseModel):
    user_id: str
    ts: int
    blend: str
    items: list[Recommendation]


class Action(BaseModel):
    decision_id: str
    ts: int
    event_id: str | None = Field(description="the event it was decided on (api-<key>: asked)")
    action: str
    experiment: str | None
    variant: str | None
    delivered: bool
    score_name: str
    score: float
    converted: bool | None = Field(description="null while the outcome window is open")


class Actions(BaseModel):
    user_id: str
    actions: list[Action]


class Cohort(BaseModel):
    model_version: int
    cohort: int
    name: str
    users: int = Field(description="users whose latest scores place them in it")


class ModelVersion(BaseModel):
    version: int
    models: int
    kinds: list[str]
    trained_from: int
    trained_to: int
    registered_at: str


class Problem(BaseModel):
    detail: str


class ActionAsked(BaseModel):
    action: str = Field(min_length=1, max_length=64, description="an action of conf/actions.yaml")


class ActionAccepted(BaseModel):
    event_id: str = Field(description="the request's event: its decision, if any, carries it")
    action: str
    status: str = Field(description="accepted: the profile job decides it")


# The caller's key for a request sent more than once: its event id, so the job decides it once.
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=96,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the same key for a request sent again: it is decided once",
    ),
]


# ------------------------------------------------------------------ the application


def create_app(
    config: Settings,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    pool: ConnectionPool | None = None,
) -> FastAPI:
    """`now_ms`: the server's clock (freshness); `pool`: instead of one of its own."""
    keys = config.api.keys()
    subject = configured_subject(config.privacy)
    stale_after = config.api.stale_after_ms

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.producer = KafkaProducer(
            bootstrap_servers=config.kafka.bootstrap_servers, acks="all", linger_ms=5
        )
        own = pool is None
        app.state.pool = pool or ConnectionPool(
            config.postgres.conninfo(),
            min_size=config.api.pool_min,
            max_size=config.api.pool_max,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=True,
        )
        yield
        app.state.producer.close()
        if own:
            app.state.pool.close()

    app = FastAPI(
        title="Behavioral analytics engine",
        version="1",
        description=__doc__,
        lifespan=lifespan,
        responses={401: {"model": Problem}},
    )
    bearer = HTTPBearer(auto_error=False)
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def authorized(
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        key: Annotated[str | None, Depends(header)],
    ) -> None:
        given = token.credentials if token is not None else key
        if given is None or not any(hmac.compare_digest(given, k) for k in keys):
            raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": "Bearer"})

    def rows(request: Request, sql: str, params=()) -> list[dict]:
        with request.app.state.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def freshness(as_of_ts: int) -> Freshness:
        age = now_ms() - as_of_ts
        return Freshness(as_of_ts=as_of_ts, age_ms=age, stale=age > stale_after)

    def missing(what: str) -> HTTPException:
        return HTTPException(404, what)

    guarded = [Depends(authorized)]
    not_found = {404: {"model": Problem}}

    policy = load_policy(config.actions.actions_file, config.actions.experiments_file)
    actions_known = {a.name for a in policy.actions}
    page = resources.files("jobs").joinpath("dashboard.html").read_text()

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_page() -> HTMLResponse:
        """The live dashboard; its data comes from /v1/dashboard with the key it is given."""
        return HTMLResponse(page)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    @app.get("/v1/dashboard", dependencies=guarded)
    def dashboard_data(
        request: Request, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 48
    ) -> dict[str, Any]:
        """Every panel of the dashboard, over the `hours` before the latest metrics window."""
        with request.app.state.pool.connection() as conn:
            return dashboard.panels(conn, policy, hours)

    @app.get("/health", tags=["service"])
    def health(request: Request) -> dict[str, str]:
        """Whether the server and its database answer (no key needed)."""
        rows(request, "SELECT 1")
        return {"status": "ok"}

    @app.get("/v1/users/{user_id}/profile", dependencies=guarded, responses=not_found)
    def profile(request: Request, user_id: UserId) -> Profile:
        """The user's latest profile."""
        found = rows(request, "SELECT * FROM user_profiles WHERE user_id = %s", (subject(user_id),))
        if not found:
            raise missing("no profile for this user")
        row = found[0]
        details = row.pop("details")
        row.pop("as_of", None)
        kept = {
            k: v for k, v in row.items() if k not in ("user_id", "version", "events", "sessions")
        }
        return Profile(
            user_id=user_id,
            version=row["version"],
            events=row["events"],
            sessions=row["sessions"],
            columns=kept,
            details=details,
            freshness=freshness(row["as_of_ts"]),
        )

    @app.get("/v1/users/{user_id}/scores", dependencies=guarded, responses=not_found)
    def scores(request: Request, user_id: UserId) -> Scores:
        """The user's latest scores, cohort and lead score."""
        found = rows(
            request,
            "SELECT s.*, l.score AS lead_score FROM user_scores s"
            " LEFT JOIN leads l USING (user_id) WHERE s.user_id = %s",
            (subject(user_id),),
        )
        if not found:
            raise missing("no scores for this user")
        row = found[0]
        fields = set(Scores.model_fields) - {"user_id", "freshness"}
        return Scores(
            user_id=user_id, freshness=freshness(row["ts"]), **{k: row[k] for k in fields}
        )

    @app.get("/v1/users/{user_id}/recommendations", dependencies=guarded, responses=not_found)
    def recommendations(request: Request, user_id: UserId) -> Recommendations:
        """The user's latest recommendation list (only for users who allow personalization)."""
        found = rows(
            request,
            "SELECT ts, blend, items FROM recommendations WHERE user_id = %s",
            (user_id,),
        )
        if not found:
            raise missing("no recommendations for this user")
        return Recommendations(user_id=user_id, **found[0])

    @app.get("/v1/users/{user_id}/actions", dependencies=guarded)
    def actions(
        request: Request,
        user_id: UserId,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> Actions:
        """The actions decided for the user, latest first, with their outcomes."""
        found = rows(
            request,
            "SELECT a.decision_id, a.ts, a.event_id, a.action, a.experiment, a.variant,"
            " a.delivered, a.score_name, a.score, o.converted FROM actions a"
            " LEFT JOIN action_outcomes o USING (decision_id)"
            " WHERE a.user_id = %s ORDER BY a.ts DESC, a.decision_id LIMIT %s",
            (user_id, limit),
        )
        return Actions(user_id=user_id, actions=found)

    @app.post(
        "/v1/users/{user_id}/actions",
        status_code=202,
        dependencies=guarded,
        responses={400: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}},
    )
    def ask_for_action(
        request: Request, user_id: UserId, asked: ActionAsked, key: IdempotencyKey
    ) -> ActionAccepted:
        """Asks the profile job to decide an action for the user now: an `action_request`
        event in the user's partition of the events topic. The job decides it by the rules of
        its own decisions (consent, eligibility, cooldown, daily cap, experiments), whatever
        the score's threshold; its decision, if any, shows in GET .../actions with this
        event id. A request sent again with the same Idempotency-Key is decided once."""
        if asked.action not in actions_known:
            raise missing(f"no action {asked.action!r} in the policy")
        event_id = f"api-{key}"
        event = {
            "event_id": event_id,
            "user_id": user_id,
            "session_id": "api",
            "type": "action_request",
            "ts": now_ms(),
            "schema_version": 1,
            "action": asked.action,
            "request_id": key,
        }
        sent = request.app.state.producer.send(
            config.kafka.topics.events.name, key=user_id.encode(), value=json.dumps(event).encode()
        )
        try:
            sent.get(timeout=10)
        except KafkaError as exc:
            raise HTTPException(503, f"the events topic did not take the request: {exc}") from None
        return ActionAccepted(event_id=event_id, action=asked.action, status="accepted")

    @app.get("/v1/cohorts", dependencies=guarded)
    def cohorts(request: Request) -> list[Cohort]:
        """The cohorts of every model version (`make train` registers them, the scores name
        them), with how many users' latest scores place them in each."""
        return rows(
            request,
            "WITH now AS (SELECT model_version, cohort, max(cohort_name) AS name,"
            "  count(*)::int AS users FROM user_scores WHERE cohort IS NOT NULL GROUP BY 1, 2)"
            " SELECT coalesce(c.model_version, n.model_version) AS model_version,"
            "  coalesce(c.cohort, n.cohort) AS cohort,"
            "  coalesce(c.name, n.name, 'cohort ' || coalesce(c.cohort, n.cohort)) AS name,"
            "  coalesce(n.users, 0) AS users"
            " FROM cohorts c FULL JOIN now n"
            "  ON n.model_version = c.model_version AND n.cohort = c.cohort ORDER BY 1, 2",
        )

    @app.get("/v1/models", dependencies=guarded)
    def models(request: Request) -> list[ModelVersion]:
        """The model versions registered, newest first."""
        return rows(
            request,
            "SELECT version, count(*)::int AS models, array_agg(DISTINCT kind) AS kinds,"
            " min(trained_from) AS trained_from, max(trained_to) AS trained_to,"
            " min(registered_at)::text AS registered_at"
            " FROM model_registry GROUP BY version ORDER BY version DESC",
        )

    @app.get("/v1/experiments/{name}", dependencies=guarded, responses=not_found)
    def experiment(
        request: Request, name: Annotated[str, Path(min_length=1, max_length=200)]
    ) -> dict[str, Any]:
        """The report of the experiment's configured run, as `make report` computes it."""
        found = next((e for e in policy.experiments if e.name == name), None)
        if found is None:
            raise missing(f"no experiment {name!r} in the configuration")
        with request.app.state.pool.connection() as conn:
            if found.leads:
                horizon = config.leads.horizon_ms
                _, result = lead_report.lead_experiment_report(conn, found, horizon)
            else:
                _, result = report.experiment_report(conn, found, config.privacy)
        return {"experiment": name, **result}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.api", description=__doc__)
    parser.parse_args(argv)
    import uvicorn

    config = settings_module.load_or_exit()
    try:
        app = create_app(config)
    except settings_module.ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    base = f"http://{config.api.host}:{config.api.port}"
    if os.environ.get(API_KEYS_VARIABLE) or not config.api.key_file:
        key, where = "<key>", "a key of BEHAVIOR_API_KEYS"
    else:  # the local stack's own key: shown, to open the dashboard with
        key, where = local_secret(FilePath(config.api.key_file)), config.api.key_file
    print(
        f"[serve] API {base}/docs (send 'Authorization: Bearer <key>', the key: {where})\n"
        f"[serve] dashboard {base}/dashboard#key={key}",
        file=sys.stderr,
        flush=True,
    )
    # No access log: its lines would carry user ids (in the paths) to wherever logs go.
    uvicorn.run(app, host=config.api.host, port=config.api.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
