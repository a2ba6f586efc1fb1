-- Every change `make refine` makes to an experiment's variant weights, with its evidence.
CREATE TABLE IF NOT EXISTS policy_changes (
    change_id   bigserial PRIMARY KEY,
    changed_at  timestamptz      NOT NULL DEFAULT now(),
    experiment  text             NOT NULL,
    variant     text             NOT NULL,
    old_share   double precision NOT NULL,
    new_share   double precision NOT NULL,
    p_best      double precision NOT NULL,
    evidence    jsonb            NOT NULL   -- users and conversions per variant at the time
);
