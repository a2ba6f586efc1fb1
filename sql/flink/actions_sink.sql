-- PostgreSQL `actions`: upsert by decision_id, so a replayed decision is written once.
CREATE TEMPORARY TABLE ${table} (
  decision_id   STRING,
  user_id       STRING,
  ts            BIGINT,
  event_id      STRING,
  action        STRING,
  score_name    STRING,
  score         DOUBLE,
  threshold     DOUBLE,
  payload       STRING,
  experiment    STRING,
  variant       STRING,
  delivered     BOOLEAN,
  model_version INT,
  scores        STRING,
  PRIMARY KEY (decision_id) NOT ENFORCED
) WITH (
  ${options}
)
