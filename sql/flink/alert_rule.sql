-- Alerts of one rule: windows of `${metric}` (${window_size}, dimension '${dimension}') whose
-- value leaves the range of the ${baseline_windows} windows before it. Flink's OVER windows end
-- at the current row, so the baseline's mean and variance are those of the whole frame with
-- the current value taken out.
SELECT
  CONCAT_WS('|', metric, dimension, window_size, CAST(window_start AS STRING)) AS alert_id,
  metric, dimension, window_size, window_start, window_end,
  `value` AS observed,
  mean - ${warning_z} * scale AS expected_low,
  mean + ${warning_z} * scale AS expected_high,
  mean AS baseline_mean,
  CAST(n AS INT) AS baseline_windows,
  (`value` - mean) / scale AS z_score,
  CASE WHEN ABS(`value` - mean) / scale >= ${critical_z} THEN 'critical' ELSE 'warning' END
    AS severity
FROM (
  SELECT *, GREATEST(
      SQRT(GREATEST((sum_sq - n * mean * mean) / (n - 1), 0.0)),
      CAST(${min_scale} AS DOUBLE), ${min_relative_scale} * ABS(mean), 1e-9) AS scale
  FROM (
    SELECT *, (frame_sum - `value`) / n AS mean, frame_sum_sq - `value` * `value` AS sum_sq
    FROM (
      SELECT metric, dimension, window_size, window_start, window_end, `value`,
             COUNT(*) OVER w - 1 AS n,
             SUM(`value`) OVER w AS frame_sum,
             SUM(`value` * `value`) OVER w AS frame_sum_sq
      FROM ${metric_windows}
      WHERE metric = '${metric}' AND dimension = '${dimension}' AND window_size = '${window_size}'
      WINDOW w AS (PARTITION BY metric, dimension, window_size ORDER BY window_time
                   ROWS BETWEEN ${baseline_windows} PRECEDING AND CURRENT ROW)
    )
    WHERE n >= ${min_baseline_windows}
  )
)
WHERE ${outside}
