-- The archive of [since, until) with each record's place in its user's history as the profile
-- job read it (read_order): twice the offset for records of the events topic; a record of
-- another topic (a consent platform's update) right after the user's last event of the events
-- topic at or before its event time.
SELECT `user_key`, `payload`, `source_topic`, `source_partition`,
       2 * `source_offset` AS `read_order`
FROM ${table}
WHERE `ts_ms` >= ${since} AND `ts_ms` < ${until} AND `source_topic` = '${events_topic}'
UNION ALL
SELECT o.`user_key`, o.`payload`, o.`source_topic`, o.`source_partition`,
       2 * COALESCE(MAX(e.`source_offset`), -1) + 1 AS `read_order`
FROM ${table} o
LEFT JOIN ${table} e
  ON e.`user_key` = o.`user_key` AND e.`source_topic` = '${events_topic}'
  AND e.`ts_ms` <= o.`ts_ms` AND e.`ts_ms` >= ${since}
WHERE o.`ts_ms` >= ${since} AND o.`ts_ms` < ${until} AND o.`source_topic` <> '${events_topic}'
GROUP BY o.`user_key`, o.`payload`, o.`source_topic`, o.`source_partition`, o.`source_offset`
