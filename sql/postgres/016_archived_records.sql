-- The event archive as the records the profile job read, for backtests (jobs/backtest.py),
-- which run the job's own code in Flink's batch mode over archived history: each event's JSON
-- back as bytes (Flink's JDBC connector cannot read jsonb), with its source coordinates (named
-- so, since the connector does not quote `offset`).
CREATE OR REPLACE VIEW archived_records AS
SELECT user_id AS user_key,
       convert_to(
         (properties
          || jsonb_build_object(
               'event_id', event_id, 'user_id', user_id, 'session_id', session_id,
               'type', type, 'ts', ts_ms, 'schema_version', schema_version)
          || CASE WHEN context IS NULL THEN '{}'::jsonb
                  ELSE jsonb_build_object('context', context) END)::text,
         'UTF8') AS payload,
       source_topic, source_partition, source_offset, ts_ms
FROM events;
