-- Metrics of the topics the profile job writes, in tumbling windows of one ${window_size}
-- (see event_metric_windows.sql). Dead letters are placed at the time they were written.
WITH
letters_w AS (
  SELECT * FROM TABLE(TUMBLE(TABLE kafka.events_dlq, DESCRIPTOR(event_time), INTERVAL '1' ${unit}))
),
actions_w AS (
  SELECT * FROM TABLE(TUMBLE(TABLE kafka.actions, DESCRIPTOR(event_time), INTERVAL '1' ${unit}))
),
scores_w AS (
  SELECT * FROM TABLE(TUMBLE(TABLE kafka.scores, DESCRIPTOR(event_time), INTERVAL '1' ${unit}))
),
metric_rows AS (
  SELECT 'dead_letters' AS metric, reason AS dimension, window_start, window_end, window_time,
         CAST(COUNT(*) AS DOUBLE) AS `value`
  FROM letters_w GROUP BY window_start, window_end, window_time, reason
  UNION ALL
  SELECT 'actions', action || '/' || COALESCE(variant, '-'), window_start, window_end,
         window_time, CAST(COUNT(*) AS DOUBLE)
  FROM actions_w GROUP BY window_start, window_end, window_time, action, variant
  UNION ALL
  -- Cohort sizes: users scored in each cohort during the window.
  SELECT 'cohort_users', COALESCE(cohort_name, '(none)'), window_start, window_end,
         window_time, CAST(COUNT(DISTINCT user_id) AS DOUBLE)
  FROM scores_w GROUP BY window_start, window_end, window_time, cohort_name
)
SELECT metric, dimension, '${window_size}' AS window_size,
       EXTRACT(EPOCH FROM window_start) * 1000 AS window_start,
       EXTRACT(EPOCH FROM window_end) * 1000 AS window_end,
       window_time, `value`
FROM metric_rows
