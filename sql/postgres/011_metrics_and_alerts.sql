-- Written by the metrics job (jobs/metrics.py): windowed counts and rates of the whole stream,
-- and alerts where a window leaves the range of its trailing baseline.
CREATE TABLE IF NOT EXISTS metrics (
    metric       text             NOT NULL,
    dimension    text             NOT NULL,  -- e.g. the event type; '' for none
    window_size  text             NOT NULL,  -- minute | hour
    window_start bigint           NOT NULL,  -- event time, epoch ms
    window_end   bigint           NOT NULL,
    value        double precision NOT NULL,
    PRIMARY KEY (metric, dimension, window_size, window_start)
);
CREATE INDEX IF NOT EXISTS metrics_window ON metrics (window_size, window_start);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id         text PRIMARY KEY,  -- metric|dimension|window_size|window_start
    metric           text             NOT NULL,
    dimension        text             NOT NULL,
    window_size      text             NOT NULL,
    window_start     bigint           NOT NULL,
    window_end       bigint           NOT NULL,
    observed         double precision NOT NULL,
    expected_low     double precision NOT NULL,
    expected_high    double precision NOT NULL,
    baseline_mean    double precision NOT NULL,
    baseline_windows integer          NOT NULL,
    z_score          double precision NOT NULL,
    severity         text             NOT NULL  -- warning | critical
);
CREATE INDEX IF NOT EXISTS alerts_window ON alerts (window_start);

-- Incidents the generator injected (hidden truth, like ground_truth_users): what an alert
-- should have found.
CREATE TABLE IF NOT EXISTS ground_truth_incidents (
    run_id   text   NOT NULL,
    kind     text   NOT NULL,  -- payment_outage
    start_ms bigint NOT NULL,
    end_ms   bigint NOT NULL,
    PRIMARY KEY (run_id, kind, start_ms)
);
