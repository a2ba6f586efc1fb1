-- PostgreSQL `user_profiles`: upsert by user_id; a DELETE row (purge) removes the user.
CREATE TEMPORARY TABLE ${table} (
  user_id                   STRING,
  version                   BIGINT,
  as_of_ts                  BIGINT,
  events                    BIGINT,
  sessions                  BIGINT,
  engagement_score          DOUBLE,
  category_affinity         DOUBLE,
  top_category              STRING,
  price_sensitivity         DOUBLE,
  intent_strength           DOUBLE,
  session_recency           DOUBLE,
  rfm_purchase_score        DOUBLE,
  rfm_engagement_score      DOUBLE,
  deviation                 DOUBLE,
  propensity_purchase       DOUBLE,
  propensity_add_to_cart    DOUBLE,
  propensity_checkout_start DOUBLE,
  propensity_churn          DOUBLE,
  top_propensity            STRING,
  details                   STRING,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (
  ${options}
)
