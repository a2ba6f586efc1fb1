-- PostgreSQL `user_scores`: upsert by user_id.
CREATE TEMPORARY TABLE ${table} (
  user_id       STRING,
  ts            BIGINT,
  event_id      STRING,
  profile_version BIGINT,
  model_version INT,
  cohort        INT,
  cohort_name   STRING,
  dense_cohort  INT,
  abandonment   DOUBLE,
  drift         DOUBLE,
  purchase      DOUBLE,
  top_score     STRING,
  ranked        STRING,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (
  ${options}
)
