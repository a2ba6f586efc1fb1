-- Long-term profiles and standard RFM. `dormant`: the short-term layers expired (no event for
-- profile.ttl_ms) and the row shows the long-term layer the state still keeps; the row is
-- deleted when that expires too (profile.long_term_ttl_ms). Exact lifetime purchases as of the
-- profile time, and their quintile scores against the breakpoints registered with the models
-- (NULL for a user who never bought, or before any model version has breakpoints).
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS dormant boolean NOT NULL DEFAULT false;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS purchase_count bigint NOT NULL DEFAULT 0;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS spend_total double precision NOT NULL DEFAULT 0;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS spend_mean double precision;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS days_since_purchase double precision;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS rfm_r integer;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS rfm_f integer;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS rfm_m integer;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS rfm_standard_score double precision;
-- The champion/challenger gate of `make train`: a version worse than the active one on its
-- hold-out is recorded as rejected and never served.
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active';
