-- Metrics of the events topic in tumbling windows of one ${window_size}: one row per metric,
-- dimension value and window, with the window's end as its event time (window_time). A record
-- counts when it is a JSON object with a known event type, a user id and a plausible time (the
-- topic also carries records the profile job dead-letters for other reasons).
WITH
events_w AS (
  SELECT * FROM TABLE(TUMBLE(TABLE kafka.events, DESCRIPTOR(event_time), INTERVAL '1' ${unit}))
  WHERE type IN (${event_types}) AND user_id IS NOT NULL
),
metric_rows AS (
  SELECT 'events' AS metric, type AS dimension, window_start, window_end, window_time,
         CAST(COUNT(*) AS DOUBLE) AS `value`
  FROM events_w GROUP BY window_start, window_end, window_time, type
  UNION ALL
  SELECT 'event_rate', '', window_start, window_end, window_time, CAST(COUNT(*) AS DOUBLE)
  FROM events_w GROUP BY window_start, window_end, window_time
  UNION ALL
  SELECT 'page_views', url, window_start, window_end, window_time, CAST(COUNT(*) AS DOUBLE)
  FROM events_w WHERE type = 'page_view' GROUP BY window_start, window_end, window_time, url
  UNION ALL
  SELECT 'active_users', '', window_start, window_end, window_time,
         CAST(COUNT(DISTINCT user_id) AS DOUBLE)
  FROM events_w GROUP BY window_start, window_end, window_time
  UNION ALL
  -- The funnel: users who reached each step in the window.
  SELECT 'funnel_users',
         CASE type WHEN 'product_view' THEN '1_view' WHEN 'add_to_cart' THEN '2_cart'
                   WHEN 'checkout_start' THEN '3_checkout' ELSE '4_purchase' END,
         window_start, window_end, window_time, CAST(COUNT(DISTINCT user_id) AS DOUBLE)
  FROM events_w WHERE type IN ('product_view', 'add_to_cart', 'checkout_start', 'purchase')
  GROUP BY window_start, window_end, window_time, type
  UNION ALL
  SELECT 'funnel_conversion', '', window_start, window_end, window_time,
         CAST(COUNT(DISTINCT CASE WHEN type = 'purchase' THEN user_id END) AS DOUBLE)
           / COUNT(DISTINCT CASE WHEN type = 'product_view' THEN user_id END)
  FROM events_w GROUP BY window_start, window_end, window_time
  HAVING COUNT(DISTINCT CASE WHEN type = 'product_view' THEN user_id END) > 0
  UNION ALL
  SELECT 'checkout_conversion', '', window_start, window_end, window_time,
         CAST(SUM(CASE WHEN type = 'purchase' THEN 1 ELSE 0 END) AS DOUBLE)
           / SUM(CASE WHEN type = 'checkout_start' THEN 1 ELSE 0 END)
  FROM events_w GROUP BY window_start, window_end, window_time
  HAVING SUM(CASE WHEN type = 'checkout_start' THEN 1 ELSE 0 END) > 0
  UNION ALL
  SELECT 'support_page_share', '', window_start, window_end, window_time,
         CAST(SUM(CASE WHEN ${support_page} THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*)
  FROM events_w WHERE type = 'page_view' GROUP BY window_start, window_end, window_time
)
SELECT metric, dimension, '${window_size}' AS window_size,
       EXTRACT(EPOCH FROM window_start) * 1000 AS window_start,
       EXTRACT(EPOCH FROM window_end) * 1000 AS window_end,
       window_time, `value`
FROM metric_rows
