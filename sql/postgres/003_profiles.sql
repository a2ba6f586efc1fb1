-- Latest profile per user, written by the profile job (upsert by user_id; a purge deletes the
-- row). Main features are typed columns; everything else is in `details`.
CREATE TABLE IF NOT EXISTS user_profiles (
    user_id                   text PRIMARY KEY,
    version                   bigint           NOT NULL,
    as_of_ts                  bigint           NOT NULL,
    as_of                     timestamptz GENERATED ALWAYS AS (to_timestamp(as_of_ts / 1000.0)) STORED,
    events                    bigint           NOT NULL,
    sessions                  bigint           NOT NULL,
    engagement_score          double precision NOT NULL,
    category_affinity         double precision NOT NULL,
    top_category              text,
    price_sensitivity         double precision NOT NULL,
    intent_strength           double precision NOT NULL,
    session_recency           double precision NOT NULL,
    rfm_purchase_score        double precision NOT NULL,
    rfm_engagement_score      double precision NOT NULL,
    deviation                 double precision NOT NULL,
    propensity_purchase       double precision NOT NULL,
    propensity_add_to_cart    double precision NOT NULL,
    propensity_checkout_start double precision NOT NULL,
    propensity_churn          double precision NOT NULL,
    top_propensity            text             NOT NULL,
    details                   jsonb            NOT NULL
);
CREATE INDEX IF NOT EXISTS user_profiles_purchase ON user_profiles (propensity_purchase DESC);

-- One row per closed session; (user_id, session_id) makes a replay converge to the same rows.
CREATE TABLE IF NOT EXISTS user_sessions (
    user_id       text             NOT NULL,
    session_id    text             NOT NULL,
    start_ts      bigint           NOT NULL,
    end_ts        bigint           NOT NULL,
    started_at    timestamptz GENERATED ALWAYS AS (to_timestamp(start_ts / 1000.0)) STORED,
    events        integer          NOT NULL,
    page_views    integer          NOT NULL,
    product_views integer          NOT NULL,
    searches      integer          NOT NULL,
    cart_adds     integer          NOT NULL,
    checkouts     integer          NOT NULL,
    purchases     integer          NOT NULL,
    revenue       double precision NOT NULL,
    mean_dwell_ms double precision NOT NULL,
    max_scroll    double precision NOT NULL,
    abandoned     boolean          NOT NULL,
    PRIMARY KEY (user_id, session_id)
);
CREATE INDEX IF NOT EXISTS user_sessions_start ON user_sessions (start_ts);
