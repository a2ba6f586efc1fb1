-- PostgreSQL `events` table: upsert by event_id, so replays converge to the same rows.
CREATE TEMPORARY TABLE ${table} (
  event_id         STRING,
  user_id          STRING,
  session_id       STRING,
  type             STRING,
  ts_ms            BIGINT,
  schema_version   INT,
  properties       STRING,
  source_topic     STRING,
  source_partition INT,
  source_offset    BIGINT,
  PRIMARY KEY (event_id) NOT ENFORCED
) WITH (
  ${options}
)
