-- Archive of every valid event, written by the ingest job. event_id is the de-duplication key:
-- a replay after a failure upserts the same rows.
CREATE TABLE IF NOT EXISTS events (
    event_id         text PRIMARY KEY,
    user_id          text        NOT NULL,
    session_id       text        NOT NULL,
    type             text        NOT NULL,
    ts_ms            bigint      NOT NULL,
    ts               timestamptz GENERATED ALWAYS AS (to_timestamp(ts_ms / 1000.0)) STORED,
    schema_version   integer     NOT NULL,
    properties       jsonb       NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts_ms);
CREATE INDEX IF NOT EXISTS events_type_ts ON events (type, ts_ms);
