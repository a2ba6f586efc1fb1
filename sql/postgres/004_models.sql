-- Every model `make train` registers: its artifact, feature order, metrics and content hash.
CREATE TABLE IF NOT EXISTS model_registry (
    name          text        NOT NULL,
    version       integer     NOT NULL,
    kind          text        NOT NULL,  -- cohorts | dense_cohorts | propensity
    target        text,                  -- abandonment | drift | purchase (propensity models)
    cohort        integer,               -- the cohort a propensity model is for; NULL = global
    path          text        NOT NULL,
    sha256        text        NOT NULL,
    features      jsonb       NOT NULL,
    metrics       jsonb       NOT NULL,
    trained_from  bigint      NOT NULL,  -- training window, event time (ms)
    trained_to    bigint      NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- The cohorts of each cohort model version, named from their traits.
CREATE TABLE IF NOT EXISTS cohorts (
    model_version integer NOT NULL,
    cohort        integer NOT NULL,
    name          text    NOT NULL,
    size          integer NOT NULL,
    traits        jsonb   NOT NULL,
    PRIMARY KEY (model_version, cohort)
);
