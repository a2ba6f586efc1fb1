-- PostgreSQL `action_outcomes`: upsert by decision_id (one outcome per decision).
CREATE TEMPORARY TABLE ${table} (
  decision_id STRING,
  user_id     STRING,
  action      STRING,
  experiment  STRING,
  variant     STRING,
  delivered   BOOLEAN,
  decided_ts  BIGINT,
  converted   BOOLEAN,
  outcome_ts  BIGINT,
  revenue     DOUBLE,
  response    STRING,
  PRIMARY KEY (decision_id) NOT ENFORCED
) WITH (
  ${options}
)
