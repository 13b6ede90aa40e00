-- Views over the record tables. `{db}` is replaced by the configured database.

-- Pass counts per filter per minute, maintained on every insert into clip_scores.
-- The sink never inserts a score twice, so these counts are exact.
CREATE TABLE IF NOT EXISTS {db}.pass_rates_minute (
    minute DateTime('UTC'),
    filter LowCardinality(String),
    model LowCardinality(String),
    passed UInt64,
    total UInt64
) ENGINE = SummingMergeTree
ORDER BY (minute, filter, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.pass_rates_minute_mv TO {db}.pass_rates_minute AS
SELECT
    minute,
    tupleElement(f, 1) AS filter,
    tupleElement(f, 2) AS model,
    toUInt64(assumeNotNull(tupleElement(f, 3))) AS passed,
    toUInt64(1) AS total
FROM (
    SELECT
        toStartOfMinute(scored_at) AS minute,
        arrayJoin(arrayFilter(x -> isNotNull(tupleElement(x, 3)), [
            ('aesthetic', aesthetic_model, aesthetic_pass),
            ('luminance', 'luminance-bt709', luminance_pass),
            ('ocr', ocr_model, ocr_pass),
            ('motion', 'vmaf-motion', motion_pass),
            ('all', model_id, CAST(passed, 'Nullable(Bool)'))
        ])) AS f
    FROM {db}.clip_scores
);

-- Overall pass rate per filter (and which model scored it).
CREATE VIEW IF NOT EXISTS {db}.pass_rates AS
SELECT filter, model, sum(m.passed) AS passed, sum(m.total) AS total, round(passed / total, 4) AS pass_rate
FROM {db}.pass_rates_minute AS m
GROUP BY filter, model
ORDER BY filter, model;

-- The latest score row of every clip (re-scoring with a new model version adds rows).
CREATE VIEW IF NOT EXISTS {db}.clip_scores_latest AS
SELECT * FROM {db}.clip_scores FINAL
ORDER BY clip_id, scored_at DESC
LIMIT 1 BY clip_id;
