-- Users moving between cohorts, per hour of event time: where they came from and went to
-- ('(new)' for a user's first cohort).
SELECT DATE_FORMAT(TUMBLE_START(event_time, INTERVAL '1' HOUR), 'yyyy-MM-dd HH:mm') AS `hour`,
       COALESCE(from_cohort_name, '(new)') AS from_cohort,
       to_cohort_name AS to_cohort,
       COUNT(*) AS moves
FROM cohort_moves
GROUP BY TUMBLE(event_time, INTERVAL '1' HOUR), from_cohort_name, to_cohort_name
ORDER BY `hour`, moves DESC, from_cohort, to_cohort;
