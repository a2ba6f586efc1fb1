-- Scores and lead scores name the profile version they were computed from: with the user, an id
-- that is the same in every run, so a consumer tells a replayed record from a new one.
ALTER TABLE user_scores ADD COLUMN IF NOT EXISTS profile_version bigint;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS profile_version bigint;
