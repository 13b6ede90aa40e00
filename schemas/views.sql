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
-- grouping millions of clip ids across three tables. Per source one tuple that starts
-- with the row's timestamp, merged by `max`: the newest row of the clip's scores (`s`),
-- of its successful annotations (`a`), of its successful non-anomalous ones (`n`, HQ's
-- drop_anomalies) and of its captions (`c`), which is what `argMax(x, timestamp) ...
-- GROUP BY clip_id` computes (equal timestamps: the larger values win, deterministically),
-- `*_rows` count the rows. Plain values, no aggregate states: the views copy rows without
-- grouping, which keeps the insert path 2.3x cheaper than argMax states (docs/benchmarks.md).
-- Read it with FINAL through the ALIAS columns (`s_aesthetic`, `a_move_dist`, ..., see
-- spatialvid.stats.latest_sql). They use tupleElement on purpose: the subcolumn syntax
-- (`s.aesthetic`) reads the parts before FINAL merges them.
CREATE TABLE IF NOT EXISTS {db}.clip_latest (
    clip_id String,
    score_rows SimpleAggregateFunction(sum, UInt64),
    s SimpleAggregateFunction(max, Tuple(at DateTime64(3, 'UTC'), video_id String, duration_s Float64,
        aesthetic Nullable(Float64), luminance_mean Nullable(Float64), ocr_ratio Nullable(Float64),
        motion Nullable(Float64), passed Bool)),
    ann_rows SimpleAggregateFunction(sum, UInt64),
    a SimpleAggregateFunction(max, Tuple(at DateTime64(3, 'UTC'), move_dist Nullable(Float64),
        rot_angle Nullable(Float64), traj_turns Nullable(UInt16), dist_level Nullable(UInt8),
        motion_trends Array(String), dynamic_ratio Nullable(Float64))),
    clean_rows SimpleAggregateFunction(sum, UInt64),
    n SimpleAggregateFunction(max, Tuple(at DateTime64(3, 'UTC'), move_dist Nullable(Float64),
        rot_angle Nullable(Float64), traj_turns Nullable(UInt16), dist_level Nullable(UInt8),
        motion_trends Array(String))),
    caption_rows SimpleAggregateFunction(sum, UInt64),
    -- caption word counts: the record's *_words (counted once by the model), -1 when the text is empty
    c SimpleAggregateFunction(max, Tuple(at DateTime64(3, 'UTC'), scene_type_first String,
        scene_type_second String, time_of_day String, weather String, crowd_density String, lighting String,
        motion_trends Array(String), opt_cam_motion_words Int64, scene_summary_words Int64,
        shot_immersion_words Int64)),
    s_video_id String ALIAS tupleElement(s, 'video_id'),
    s_duration_s Float64 ALIAS tupleElement(s, 'duration_s'),
    s_aesthetic Nullable(Float64) ALIAS tupleElement(s, 'aesthetic'),
    s_luminance_mean Nullable(Float64) ALIAS tupleElement(s, 'luminance_mean'),
    s_ocr_ratio Nullable(Float64) ALIAS tupleElement(s, 'ocr_ratio'),
    s_motion Nullable(Float64) ALIAS tupleElement(s, 'motion'),
    s_passed Bool ALIAS tupleElement(s, 'passed'),
    a_move_dist Nullable(Float64) ALIAS tupleElement(a, 'move_dist'),
    a_rot_angle Nullable(Float64) ALIAS tupleElement(a, 'rot_angle'),
    a_traj_turns Nullable(UInt16) ALIAS tupleElement(a, 'traj_turns'),
    a_dist_level Nullable(UInt8) ALIAS tupleElement(a, 'dist_level'),
    a_motion_trends Array(String) ALIAS tupleElement(a, 'motion_trends'),
    a_dynamic_ratio Nullable(Float64) ALIAS tupleElement(a, 'dynamic_ratio'),
    n_move_dist Nullable(Float64) ALIAS tupleElement(n, 'move_dist'),
    n_rot_angle Nullable(Float64) ALIAS tupleElement(n, 'rot_angle'),
    n_traj_turns Nullable(UInt16) ALIAS tupleElement(n, 'traj_turns'),
    n_dist_level Nullable(UInt8) ALIAS tupleElement(n, 'dist_level'),
    n_motion_trends Array(String) ALIAS tupleElement(n, 'motion_trends'),
    c_scene_type_first String ALIAS tupleElement(c, 'scene_type_first'),
    c_scene_type_second String ALIAS tupleElement(c, 'scene_type_second'),
    c_time_of_day String ALIAS tupleElement(c, 'time_of_day'),
    c_weather String ALIAS tupleElement(c, 'weather'),
    c_crowd_density String ALIAS tupleElement(c, 'crowd_density'),
    c_lighting String ALIAS tupleElement(c, 'lighting'),
    c_motion_trends Array(String) ALIAS tupleElement(c, 'motion_trends'),
    c_opt_cam_motion_words Int64 ALIAS tupleElement(c, 'opt_cam_motion_words'),
    c_scene_summary_words Int64 ALIAS tupleElement(c, 'scene_summary_words'),
    c_shot_immersion_words Int64 ALIAS tupleElement(c, 'shot_immersion_words')
) ENGINE = AggregatingMergeTree
-- No partitions: an insert writes one part per view, and FINAL over a fully merged
-- table (one part) reads it without merging.
ORDER BY clip_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_scores_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(1) AS score_rows,
    (scored_at, CAST(video_id, 'String'), duration_s, aesthetic, luminance_mean, ocr_ratio, motion, passed) AS s
FROM {db}.clip_scores;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_annotations_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(1) AS ann_rows,
    (annotated_at, move_dist, rot_angle, traj_turns, dist_level, motion_trends, dynamic_ratio) AS a
FROM {db}.clip_annotations WHERE success;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_clean_annotations_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(1) AS clean_rows,
    (annotated_at, move_dist, rot_angle, traj_turns, dist_level, motion_trends) AS n
FROM {db}.clip_annotations WHERE success AND NOT ifNull(anomaly, false);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clip_latest_captions_mv TO {db}.clip_latest AS
SELECT clip_id, toUInt64(1) AS caption_rows,
    (captioned_at, CAST(scene_type_first, 'String'), scene_type_second, CAST(time_of_day, 'String'),
     CAST(weather, 'String'), CAST(crowd_density, 'String'), CAST(lighting, 'String'), motion_trends,
     if(empty(opt_cam_motion), -1, toInt64(opt_cam_motion_words)),
     if(empty(scene_summary), -1, toInt64(scene_summary_words)),
     if(empty(shot_immersion), -1, toInt64(shot_immersion_words))) AS c
FROM {db}.clip_captions;

-- A warehouse created before clip_latest existed (or with its earlier layout, which
-- spatialvid.warehouse.init_schema drops): fill it once from the record tables, only
-- while it holds nothing from that table, so running the schema again is a no-op.
INSERT INTO {db}.clip_latest (clip_id, score_rows, s)
SELECT clip_id, toUInt64(count()),
    max((scored_at, CAST(video_id, 'String'), duration_s, aesthetic, luminance_mean, ocr_ratio, motion, passed))
FROM {db}.clip_scores WHERE (SELECT count() FROM {db}.clip_latest WHERE score_rows > 0) = 0 GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, ann_rows, a)
SELECT clip_id, toUInt64(count()),
    max((annotated_at, move_dist, rot_angle, traj_turns, dist_level, motion_trends, dynamic_ratio))
FROM {db}.clip_annotations WHERE success AND (SELECT count() FROM {db}.clip_latest WHERE ann_rows > 0) = 0
GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, clean_rows, n)
SELECT clip_id, toUInt64(count()), max((annotated_at, move_dist, rot_angle, traj_turns, dist_level, motion_trends))
FROM {db}.clip_annotations WHERE success AND NOT ifNull(anomaly, false)
    AND (SELECT count() FROM {db}.clip_latest WHERE clean_rows > 0) = 0 GROUP BY clip_id;

INSERT INTO {db}.clip_latest (clip_id, caption_rows, c)
SELECT clip_id, toUInt64(count()),
    max((captioned_at, CAST(scene_type_first, 'String'), scene_type_second, CAST(time_of_day, 'String'),
         CAST(weather, 'String'), CAST(crowd_density, 'String'), CAST(lighting, 'String'), motion_trends,
         if(empty(opt_cam_motion), -1, toInt64(opt_cam_motion_words)),
         if(empty(scene_summary), -1, toInt64(scene_summary_words)),
         if(empty(shot_immersion), -1, toInt64(shot_immersion_words))))
FROM {db}.clip_captions WHERE (SELECT count() FROM {db}.clip_latest WHERE caption_rows > 0) = 0 GROUP BY clip_id;
