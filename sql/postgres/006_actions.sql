-- Every decision of the profile job's decision step, delivered or not (a control arm's "would
-- have triggered"). The id is derived from the profile update, so a replay writes it once.
CREATE TABLE IF NOT EXISTS actions (
    decision_id   text PRIMARY KEY,
    user_id       text             NOT NULL,
    ts            bigint           NOT NULL,  -- event time of the update that triggered it
    event_id      text,
    action        text             NOT NULL,
    score_name    text             NOT NULL,
    score         double precision NOT NULL,
    threshold     double precision NOT NULL,
    payload       jsonb            NOT NULL,
    experiment    text,
    variant       text,
    delivered     boolean          NOT NULL,  -- false: control arm, logged only
    model_version integer,
    scores        jsonb            NOT NULL   -- every score the decision could see
);
CREATE INDEX IF NOT EXISTS actions_experiment ON actions (experiment, variant);
CREATE INDEX IF NOT EXISTS actions_user ON actions (user_id, ts);

-- One outcome per decision: a purchase within the attribution window (converted) or none.
CREATE TABLE IF NOT EXISTS action_outcomes (
    decision_id text PRIMARY KEY,
    user_id     text             NOT NULL,
    action      text             NOT NULL,
    experiment  text,
    variant     text,
    delivered   boolean          NOT NULL,
    decided_ts  bigint           NOT NULL,
    converted   boolean          NOT NULL,
    outcome_ts  bigint           NOT NULL,
    revenue     double precision NOT NULL,
    response    text
);
CREATE INDEX IF NOT EXISTS action_outcomes_experiment ON action_outcomes (experiment, variant);

-- Per experiment and variant, always current: users exposed (with at least one decision), users
-- with an outcome, users converted, and the conversion rate among users with an outcome.
CREATE OR REPLACE VIEW experiment_results AS
WITH exposed AS (
    SELECT experiment, variant, user_id, min(ts) AS first_ts
    FROM actions WHERE experiment IS NOT NULL
    GROUP BY experiment, variant, user_id
), outcome AS (
    SELECT experiment, variant, user_id, bool_or(converted) AS converted, sum(revenue) AS revenue
    FROM action_outcomes WHERE experiment IS NOT NULL
    GROUP BY experiment, variant, user_id
)
SELECT e.experiment, e.variant,
       count(*)                                   AS exposed_users,
       count(o.user_id)                           AS measured_users,
       count(*) FILTER (WHERE o.converted)        AS converted_users,
       coalesce(sum(o.revenue), 0)                AS revenue,
       CASE WHEN count(o.user_id) > 0
            THEN (count(*) FILTER (WHERE o.converted))::double precision / count(o.user_id) END
                                                  AS conversion_rate
FROM exposed e
LEFT JOIN outcome o USING (experiment, variant, user_id)
GROUP BY e.experiment, e.variant;
