-- The latest recommendation list per user, written by the profile job's ranking step (upsert by
-- user_id; deleted when the user is forgotten). `items`: [{item_id, score, reasons}], best
-- first; `reasons` name the signals that put the item there.
CREATE TABLE IF NOT EXISTS recommendations (
    user_id  text PRIMARY KEY,
    ts       bigint  NOT NULL,  -- event time of the update that asked for the list
    event_id text,              -- the event behind it; NULL for a timer's offer
    blend    text    NOT NULL,  -- conf recommendations.blends
    bucket   integer NOT NULL,  -- the LSH bucket of the user's segment profile
    items    jsonb   NOT NULL
);
