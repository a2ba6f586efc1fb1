-- Experiment results count each user once, at their first exposure, with the outcome of that
-- decision's attribution window. Later decisions would measure a user who has already been
-- treated: their timing and number differ between arms, and so would bias the comparison.
CREATE OR REPLACE VIEW experiment_exposures AS
SELECT f.experiment, f.variant, f.user_id, f.decision_id, f.ts AS first_ts,
       o.converted, o.revenue       -- NULL while the window is still open
FROM (
    SELECT DISTINCT ON (experiment, user_id) experiment, variant, user_id, decision_id, ts
    FROM actions WHERE experiment IS NOT NULL
    ORDER BY experiment, user_id, ts, decision_id
) f
LEFT JOIN action_outcomes o USING (decision_id);

CREATE OR REPLACE VIEW experiment_results AS
SELECT experiment, variant,
       count(*)                                   AS exposed_users,
       count(converted)                           AS measured_users,
       count(*) FILTER (WHERE converted)          AS converted_users,
       coalesce(sum(revenue), 0)                  AS revenue,
       CASE WHEN count(converted) > 0
            THEN (count(*) FILTER (WHERE converted))::double precision / count(converted) END
                                                  AS conversion_rate
FROM experiment_exposures
GROUP BY experiment, variant;
