-- Hidden ground truth written by the synthetic event generator, so models and tests can be
-- scored against what really happened. Never read by the streaming jobs.
CREATE TABLE IF NOT EXISTS ground_truth_users (
    run_id         text    NOT NULL,
    user_id        text    NOT NULL,
    archetype      text    NOT NULL,
    drifted        boolean NOT NULL,
    drift_start_ms bigint,
    PRIMARY KEY (run_id, user_id)
);
CREATE TABLE IF NOT EXISTS ground_truth_sessions (
    run_id     text    NOT NULL,
    session_id text    NOT NULL,
    user_id    text    NOT NULL,
    start_ms   bigint  NOT NULL,
    end_ms     bigint  NOT NULL,
    added_to_cart boolean NOT NULL,
    purchased  boolean NOT NULL,
    abandoned  boolean NOT NULL,
    PRIMARY KEY (run_id, session_id)
);
