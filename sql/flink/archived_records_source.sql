-- The event archive as the records the profile job read (PostgreSQL view archived_records:
-- each event's JSON as bytes, with its source coordinates), read once: a backtest's input.
CREATE TEMPORARY TABLE ${table} (
  `user_key`         STRING,
  `payload`          BYTES,
  `source_topic`     STRING,
  `source_partition` INT,
  `source_offset`    BIGINT,
  `ts_ms`            BIGINT
) WITH (
  ${options}
)
