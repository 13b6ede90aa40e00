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

-- The latest state of every clip, kept at insert time (issue 8): one row per clip after
-- merges, so the dashboard, the statistics and HQ read one narrow table instead of
-- grouping millions of clip ids across three tables. Each column holds exactly what
-- the GROUP BY definition computes: `argMax(x, scored_at)` of the clip's score rows,
-- of its successful annotation rows (`a_*`), of its successful non-anomalous ones
-- (`n_*`, HQ's drop_anomalies) and of its caption rows (`c_*`), and `*_rows` count them.
-- argMax states merge associatively, so re-scoring with a new model version adds a
-- state that wins when newer, and a row stored twice changes nothing but the count.
-- Read it with FINAL and finalizeAggregation (see spatialvid.stats.latest_sql).
CREATE TABLE IF NOT EXISTS {db}.clip_latest (
    clip_id String,
    score_rows SimpleAggregateFunction(sum, UInt64),
    s_video_id AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    s_duration_s AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    s_aesthetic AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    s_luminance_mean AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    s_ocr_ratio AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    s_motion AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    s_passed AggregateFunction(argMax, Bool, DateTime64(3, 'UTC')),
    ann_rows SimpleAggregateFunction(sum, UInt64),
    a_move_dist AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    a_rot_angle AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    a_traj_turns AggregateFunction(argMax, Nullable(UInt16), DateTime64(3, 'UTC')),
    a_dist_level AggregateFunction(argMax, Nullable(UInt8), DateTime64(3, 'UTC')),
    a_motion_trends AggregateFunction(argMax, Array(String), DateTime64(3, 'UTC')),
    a_dynamic_ratio AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    clean_rows SimpleAggregateFunction(sum, UInt64),
    n_move_dist AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    n_rot_angle AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC')),
    n_traj_turns AggregateFunction(argMax, Nullable(UInt16), DateTime64(3, 'UTC')),
    n_dist_level AggregateFunction(argMax, Nullable(UInt8), DateTime64(3, 'UTC')),
    n_motion_trends AggregateFunction(argMax, Array(String), DateTime64(3, 'UTC')),
    caption_rows SimpleAggregateFunction(sum, UInt64),
    c_scene_type_first AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_scene_type_second AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_time_of_day AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_weather AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_crowd_density AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_lighting AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    c_motion_trends AggregateFunction(argMax, Array(String), DateTime64(3, 'UTC')),
    -- words of the caption text (the record's *_words, counted once by the model), -1 when it is empty
    c_opt_cam_motion_words AggregateFunction(argMax, Int64, DateTime64(3, 'UTC')),
    c_scene_summary_words AggregateFunction(argMax, Int64, DateTime64(3, 'UTC')),
    c_shot_immersion_words AggregateFunction(argMax, Int64, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
-- No partitions: an insert writes one part per view, and FINAL over a fully merged
-- table (one part) reads it without merging.
ORDER BY clip_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_scores_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(count()) AS score_rows,
    argMaxState(CAST(video_id, 'String'), scored_at) AS s_video_id,
    argMaxState(duration_s, scored_at) AS s_duration_s,
    argMaxState(aesthetic, scored_at) AS s_aesthetic,
    argMaxState(luminance_mean, scored_at) AS s_luminance_mean,
    argMaxState(ocr_ratio, scored_at) AS s_ocr_ratio,
    argMaxState(motion, scored_at) AS s_motion,
    argMaxState(passed, scored_at) AS s_passed
FROM {db}.clip_scores GROUP BY clip_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_annotations_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(count()) AS ann_rows,
    argMaxState(move_dist, annotated_at) AS a_move_dist,
    argMaxState(rot_angle, annotated_at) AS a_rot_angle,
    argMaxState(traj_turns, annotated_at) AS a_traj_turns,
    argMaxState(dist_level, annotated_at) AS a_dist_level,
    argMaxState(motion_trends, annotated_at) AS a_motion_trends,
    argMaxState(dynamic_ratio, annotated_at) AS a_dynamic_ratio
FROM {db}.clip_annotations WHERE success GROUP BY clip_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_clean_annotations_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(count()) AS clean_rows,
    argMaxState(move_dist, annotated_at) AS n_move_dist,
    argMaxState(rot_angle, annotated_at) AS n_rot_angle,
    argMaxState(traj_turns, annotated_at) AS n_traj_turns,
    argMaxState(dist_level, annotated_at) AS n_dist_level,
    argMaxState(motion_trends, annotated_at) AS n_motion_trends
FROM {db}.clip_annotations WHERE success AND NOT ifNull(anomaly, false) GROUP BY clip_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_captions_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(count()) AS caption_rows,
    argMaxState(CAST(scene_type_first, 'String'), captioned_at) AS c_scene_type_first,
    argMaxState(scene_type_second, captioned_at) AS c_scene_type_second,
    argMaxState(CAST(time_of_day, 'String'), captioned_at) AS c_time_of_day,
    argMaxState(CAST(weather, 'String'), captioned_at) AS c_weather,
    argMaxState(CAST(crowd_density, 'String'), captioned_at) AS c_crowd_density,
    argMaxState(CAST(lighting, 'String'), captioned_at) AS c_lighting,
    argMaxState(motion_trends, captioned_at) AS c_motion_trends,
    argMaxState(if(empty(opt_cam_motion), -1, toInt64(opt_cam_motion_words)), captioned_at) AS c_opt_cam_motion_words,
    argMaxState(if(empty(scene_summary), -1, toInt64(scene_summary_words)), captioned_at) AS c_scene_summary_words,
    argMaxState(if(empty(shot_immersion), -1, toInt64(shot_immersion_words)), captioned_at) AS c_shot_immersion_words
FROM {db}.clip_captions GROUP BY clip_id;

-- A warehouse created before clip_latest existed: fill it once from the record tables
-- (only while it holds nothing from that table, so running the schema again is a no-op).
INSERT INTO {db}.clip_latest (clip_id, score_rows, s_video_id, s_duration_s, s_aesthetic, s_luminance_mean, s_ocr_ratio, s_motion, s_passed)
SELECT clip_id, toUInt64(count()), argMaxState(CAST(video_id, 'String'), scored_at), argMaxState(duration_s, scored_at),
    argMaxState(aesthetic, scored_at), argMaxState(luminance_mean, scored_at), argMaxState(ocr_ratio, scored_at),
    argMaxState(motion, scored_at), argMaxState(passed, scored_at)
FROM {db}.clip_scores WHERE (SELECT count() FROM {db}.clip_latest WHERE score_rows > 0) = 0 GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, ann_rows, a_move_dist, a_rot_angle, a_traj_turns, a_dist_level, a_motion_trends, a_dynamic_ratio)
SELECT clip_id, toUInt64(count()), argMaxState(move_dist, annotated_at), argMaxState(rot_angle, annotated_at),
    argMaxState(traj_turns, annotated_at), argMaxState(dist_level, annotated_at), argMaxState(motion_trends, annotated_at),
    argMaxState(dynamic_ratio, annotated_at)
FROM {db}.clip_annotations WHERE success AND (SELECT count() FROM {db}.clip_latest WHERE ann_rows > 0) = 0 GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, clean_rows, n_move_dist, n_rot_angle, n_traj_turns, n_dist_level, n_motion_trends)
SELECT clip_id, toUInt64(count()), argMaxState(move_dist, annotated_at), argMaxState(rot_angle, annotated_at),
    argMaxState(traj_turns, annotated_at), argMaxState(dist_level, annotated_at), argMaxState(motion_trends, annotated_at)
FROM {db}.clip_annotations WHERE success AND NOT ifNull(anomaly, false)
    AND (SELECT count() FROM {db}.clip_latest WHERE clean_rows > 0) = 0 GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, caption_rows, c_scene_type_first, c_scene_type_second, c_time_of_day, c_weather,
    c_crowd_density, c_lighting, c_motion_trends, c_opt_cam_motion_words, c_scene_summary_words, c_shot_immersion_words)
SELECT clip_id, toUInt64(count()), argMaxState(CAST(scene_type_first, 'String'), captioned_at),
    argMaxState(scene_type_second, captioned_at), argMaxState(CAST(time_of_day, 'String'), captioned_at),
    argMaxState(CAST(weather, 'String'), captioned_at), argMaxState(CAST(crowd_density, 'String'), captioned_at),
    argMaxState(CAST(lighting, 'String'), captioned_at), argMaxState(motion_trends, captioned_at),
    argMaxState(if(empty(opt_cam_motion), -1, toInt64(opt_cam_motion_words)), captioned_at),
    argMaxState(if(empty(scene_summary), -1, toInt64(scene_summary_words)), captioned_at),
    argMaxState(if(empty(shot_immersion), -1, toInt64(shot_immersion_words)), captioned_at)
FROM {db}.clip_captions WHERE (SELECT count() FROM {db}.clip_latest WHERE caption_rows > 0) = 0 GROUP BY clip_id;
