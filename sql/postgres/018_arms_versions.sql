-- A decision in an experiment carries the version of the experiment's arms (conf/policy.py
-- Experiment.arms_version): a report covers one version. Decisions from before have none.
ALTER TABLE actions ADD COLUMN IF NOT EXISTS arms text;
CREATE INDEX IF NOT EXISTS actions_experiment_arms ON actions (experiment, arms, ts);
