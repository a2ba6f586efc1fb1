-- PostgreSQL `cohort_moves`: upsert by move_id, so a replayed move is written once.
CREATE TEMPORARY TABLE ${table} (
  move_id          STRING,
  user_id          STRING,
  ts               BIGINT,
  from_cohort      INT,
  to_cohort        INT,
  from_cohort_name STRING,
  to_cohort_name   STRING,
  reason           STRING,
  model_version    INT,
  PRIMARY KEY (move_id) NOT ENFORCED
) WITH (
  ${options}
)
