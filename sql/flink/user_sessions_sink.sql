-- PostgreSQL `user_sessions`: upsert by (user_id, session_id), so replays converge.
CREATE TEMPORARY TABLE ${table} (
  user_id       STRING,
  session_id    STRING,
  start_ts      BIGINT,
  end_ts        BIGINT,
  events        INT,
  page_views    INT,
  product_views INT,
  searches      INT,
  cart_adds     INT,
  checkouts     INT,
  purchases     INT,
  revenue       DOUBLE,
  mean_dwell_ms DOUBLE,
  max_scroll    DOUBLE,
  abandoned     BOOLEAN,
  PRIMARY KEY (user_id, session_id) NOT ENFORCED
) WITH (
  ${options}
)
