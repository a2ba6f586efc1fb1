-- Experiments about lead scoring (conf/policy.py `leads: true`): a lead record names the
-- experiment and arm its user is in, and each of its lead scores gets an outcome.
ALTER TABLE leads ADD COLUMN IF NOT EXISTS experiment text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS variant text;

-- One outcome per lead score of a user in such an experiment: a purchase within
-- `leads.horizon_ms` after it (converted), or none. The lead record's id is (user_id,
-- profile_version); `leads` keeps only each user's latest, so the scores are kept here.
CREATE TABLE IF NOT EXISTS lead_outcomes (
    user_id          text             NOT NULL,
    profile_version  bigint           NOT NULL,
    experiment       text             NOT NULL,
    variant          text             NOT NULL,
    scored_ts        bigint           NOT NULL,
    score            double precision NOT NULL,
    unmodified_score double precision NOT NULL,
    converted        boolean          NOT NULL,
    outcome_ts       bigint           NOT NULL,
    revenue          double precision NOT NULL,
    PRIMARY KEY (user_id, profile_version)
);
CREATE INDEX IF NOT EXISTS lead_outcomes_experiment ON lead_outcomes (experiment, variant);
