-- Erasures carried out by jobs/erasure.py: when, why and how many rows of each table, without
-- the user's id (docs/privacy.md).
CREATE TABLE IF NOT EXISTS erasure_receipts (
    receipt_id    text PRIMARY KEY,  -- the erasure record's topic-partition-offset
    reason        text        NOT NULL,  -- analytics_revoked | requested
    request_id    text,              -- the erasure request's id in the system that took it
    requested_ts  bigint      NOT NULL,  -- event time of the revocation or request
    erased_at     timestamptz NOT NULL DEFAULT now(),
    rows          jsonb       NOT NULL   -- table -> rows deleted
);
