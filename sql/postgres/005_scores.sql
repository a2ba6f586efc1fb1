-- Latest scores per user, written by the profile job (upsert by user_id): the cohort, the
-- learned propensities of the model version in use, and every score ranked in `ranked`.
CREATE TABLE IF NOT EXISTS user_scores (
    user_id       text PRIMARY KEY,
    ts            bigint           NOT NULL,  -- event time of the profile update
    event_id      text,                       -- the event behind it; NULL for a timer's update
    model_version integer,                    -- NULL while no model version is registered
    cohort        integer,
    cohort_name   text,
    dense_cohort  integer,                    -- DBSCAN cohort; -1 = noise
    abandonment   double precision,           -- only while a cart is open
    drift         double precision,
    purchase      double precision,
    top_score     text             NOT NULL,
    ranked        jsonb            NOT NULL
);
CREATE INDEX IF NOT EXISTS user_scores_cohort ON user_scores (model_version, cohort);

-- Every cohort move, from the hysteresis of the profile job. The id is derived from the move,
-- so a replay after a failure writes the same rows again.
CREATE TABLE IF NOT EXISTS cohort_moves (
    move_id          text PRIMARY KEY,
    user_id          text    NOT NULL,
    ts               bigint  NOT NULL,
    from_cohort      integer,                 -- NULL for a user's first cohort
    to_cohort        integer NOT NULL,
    from_cohort_name text,
    to_cohort_name   text,
    reason           text    NOT NULL,        -- first | margin | dwell | model
    model_version    integer NOT NULL
);
CREATE INDEX IF NOT EXISTS cohort_moves_user ON cohort_moves (user_id, ts);

-- Latest lead score per user (upsert by user_id).
CREATE TABLE IF NOT EXISTS leads (
    user_id         text PRIMARY KEY,
    ts              bigint           NOT NULL,
    model_version   integer,
    cohort_name     text,
    intent          double precision NOT NULL,
    capacity        double precision NOT NULL,
    score           double precision NOT NULL,
    base_intent     double precision NOT NULL,
    base_capacity   double precision NOT NULL,
    modifiers       text             NOT NULL  -- ids of the cohort modifiers applied, e.g. "1,3"
);
CREATE INDEX IF NOT EXISTS leads_score ON leads (score DESC);

-- Configuration: how a cohort changes lead scores. `cohort_match` is found, ignoring case, in
-- the generated cohort name; `context` says when the modifier applies. The running job reads
-- this table again every `models.reload_interval_s`.
CREATE TABLE IF NOT EXISTS cohort_modifiers (
    modifier_id  integer PRIMARY KEY,
    cohort_match text             NOT NULL CHECK (cohort_match <> ''),
    context      text             NOT NULL DEFAULT 'always'
                                  CHECK (context IN ('always', 'competitor_view')),
    intent_pct   double precision NOT NULL DEFAULT 0 CHECK (intent_pct > -100),
    capacity_pct double precision NOT NULL DEFAULT 0 CHECK (capacity_pct > -100),
    note         text
);
INSERT INTO cohort_modifiers (modifier_id, cohort_match, context, intent_pct, capacity_pct, note)
VALUES
    (1, 'researchers', 'always', 15, 0, 'researchers buy deliberately'),
    (2, 'price-sensitive', 'always', 0, -10, 'deal hunters spend less'),
    (3, 'price-sensitive', 'competitor_view', 5, 0, 'comparing with a competitor')
ON CONFLICT (modifier_id) DO NOTHING;
