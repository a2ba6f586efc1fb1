-- PostgreSQL `leads`: upsert by user_id.
CREATE TEMPORARY TABLE ${table} (
  user_id       STRING,
  ts            BIGINT,
  profile_version BIGINT,
  model_version INT,
  cohort_name   STRING,
  intent        DOUBLE,
  capacity      DOUBLE,
  score         DOUBLE,
  base_intent   DOUBLE,
  base_capacity DOUBLE,
  modifiers     STRING,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (
  ${options}
)
