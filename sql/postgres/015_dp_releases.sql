-- Aggregates released with differential privacy (jobs/release.py): the ledger the privacy
-- budget is counted from (the epsilons of a period's releases add up), and what was released.
CREATE TABLE IF NOT EXISTS dp_releases (
    release_id    bigserial   PRIMARY KEY,
    what          text        NOT NULL,
    params        jsonb       NOT NULL,
    epsilon       double precision NOT NULL,
    sensitivity   integer     NOT NULL,  -- L1 change one user can make to the counts
    period_start  timestamptz NOT NULL,  -- the budget period it is counted in
    released_at   timestamptz NOT NULL DEFAULT now(),
    released      jsonb       NOT NULL   -- bin -> noisy count
);
CREATE INDEX IF NOT EXISTS dp_releases_period ON dp_releases (period_start);
