-- Raw bytes of the events topic with their Kafka coordinates, so bad records can be traced.
-- Event time is read from the JSON `ts` here, in the source, so watermarks are generated per
-- Kafka partition: a partition read ahead of another does not make the other's events late.
-- A missing, unreadable or implausible `ts` (outside [min_ts_ms, now + max_future_skew_ms])
-- counts as time 0, which never moves a watermark; the parser dead-letters such records.
CREATE TEMPORARY TABLE ${table} (
  `payload`    BYTES,
  `topic`      STRING METADATA VIRTUAL,
  `partition`  INT    METADATA VIRTUAL,
  `offset`     BIGINT METADATA VIRTUAL,
  -- Whom the record claims to be about, so a job can key it by user before parsing it. The
  -- trip through UTF-8 bytes turns a lone surrogate (an escape such as \ud800, which Python
  -- cannot take) into '?'; the parser dead-letters such a record whatever its key.
  `user_key`   AS COALESCE(
    DECODE(ENCODE(JSON_VALUE(CAST(`payload` AS STRING), '$$.user_id'), 'UTF-8'), 'UTF-8'), ''),
  `event_time` AS TO_TIMESTAMP_LTZ(
    CASE
      WHEN TRY_CAST(JSON_VALUE(CAST(`payload` AS STRING), '$$.ts') AS BIGINT)
           BETWEEN ${min_ts_ms} AND UNIX_TIMESTAMP() * 1000 + ${max_future_skew_ms}
      THEN TRY_CAST(JSON_VALUE(CAST(`payload` AS STRING), '$$.ts') AS BIGINT)
      ELSE 0
    END, 3),
  WATERMARK FOR `event_time` AS `event_time` - INTERVAL '${out_of_orderness_s}' SECOND
) WITH (
  ${options}
)
