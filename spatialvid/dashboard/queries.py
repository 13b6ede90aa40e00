"""The dashboard's panels: named read-only SQL with bound parameters.

The same text runs on the web page (``spatialvid dashboard``), in the Grafana
dashboards of ``infra/`` (with Grafana's time macros) and in the tests, which check that
every number on the page equals what its SQL returns. Only the database name is placed
into the text (an identifier cannot be bound, and it comes from the configuration);
every value is a ``{name:Type}`` parameter bound by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spatialvid.stats import check_table, funnel_sql

#: Stage -> (table, timestamp column) for throughput: rows each stage wrote per minute.
STAGE_TABLES: dict[str, tuple[str, str]] = {
    "crawl": ("videos", "produced_at"),
    "split": ("clips", "produced_at"),
    "score": ("clip_scores", "scored_at"),
    "annotate": ("clip_annotations", "annotated_at"),
    "caption": ("clip_captions", "captioned_at"),
    "deadletter": ("deadletters", "failed_at"),
}


@dataclass(frozen=True)
class Panel:
    """One panel: a title, its SQL and the parameters it binds."""

    title: str
    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "table"  # table | series (minute, series, value) | bars (label, value)


def panels(db: str, minutes: int = 60, limit: int = 20, hq_table: str | None = None) -> dict[str, Panel]:
    """Every panel of the dashboard for database ``db``."""
    check_table(db)
    window = {"minutes": int(minutes)}
    throughput = " UNION ALL ".join(
        f"SELECT '{stage}' AS stage, toStartOfMinute({ts}) AS minute FROM {db}.{table} "
        f"WHERE {ts} >= now() - toIntervalMinute({{minutes:UInt32}})"
        for stage, (table, ts) in STAGE_TABLES.items())
    return {
        "totals": Panel("Totals", f"""
WITH (SELECT (countIf(score_rows > 0), countIf(ann_rows > 0), countIf(caption_rows > 0))
      FROM {db}.clip_latest FINAL) AS per_clip  -- distinct clips, kept at insert time
SELECT
    (SELECT count() FROM {db}.videos) AS videos,
    (SELECT count() FROM {db}.clips) AS clips,
    per_clip.1 AS scored,
    (SELECT sum(passed) FROM {db}.pass_rates_minute WHERE filter = 'all') AS passed_all,
    per_clip.2 AS annotated,
    per_clip.3 AS captioned,
    (SELECT count() FROM {db}.deadletters) AS dead_letters"""),
        "pass_rates": Panel("Pass rate per filter (all time)", f"""
SELECT filter, sum(m.passed) AS passed, sum(m.total) AS total, round(sum(m.passed) / sum(m.total), 4) AS pass_rate
FROM {db}.pass_rates_minute AS m GROUP BY filter ORDER BY filter""", kind="bars"),
        "pass_rate_series": Panel("Pass rate per filter per minute", f"""
SELECT minute, filter, round(sum(m.passed) / sum(m.total), 4) AS pass_rate
FROM {db}.pass_rates_minute AS m WHERE minute >= now() - toIntervalMinute({{minutes:UInt32}})
GROUP BY minute, filter ORDER BY minute, filter""", window, kind="series"),
        "funnel": Panel("Funnel: crawled hours to HQ hours", funnel_sql(db, hq_table).strip(), kind="bars"),
        "throughput": Panel("Throughput per stage (rows per minute)", f"""
SELECT minute, stage, count() AS rows FROM ({throughput})
GROUP BY minute, stage ORDER BY minute, stage""", window, kind="series"),
        "dead_letters": Panel("Dead letters by reason", f"""
SELECT stage, error_class, count() AS letters, any(error_message) AS example
FROM {db}.deadletters GROUP BY stage, error_class ORDER BY letters DESC, stage, error_class LIMIT 50"""),
        "latest_clips": Panel("Latest clips", f"""
SELECT s.clip_id AS clip_id, s.scored_at AS scored_at, round(s.aesthetic, 3) AS aesthetic,
    round(s.luminance_mean, 2) AS luminance, round(s.ocr_ratio, 4) AS ocr, round(s.motion, 3) AS motion,
    s.passed AS passed, arrayStringConcat(s.reject_reasons, ', ') AS reasons,
    round(a.move_dist, 3) AS move_dist, round(a.rot_angle, 3) AS rot_angle, a.traj_turns AS traj_turns,
    a.dist_level AS dist_level, notEmpty(a.artifacts_uri) AS has_trajectory
FROM (SELECT * FROM {db}.clip_scores ORDER BY scored_at DESC, clip_id LIMIT {{limit:UInt32}}) AS s
LEFT JOIN (
    SELECT clip_id, argMax(move_dist, annotated_at) AS move_dist, argMax(rot_angle, annotated_at) AS rot_angle,
        argMax(traj_turns, annotated_at) AS traj_turns, argMax(dist_level, annotated_at) AS dist_level,
        argMax(artifacts_uri, annotated_at) AS artifacts_uri
    FROM {db}.clip_annotations
    WHERE success AND clip_id IN (SELECT clip_id FROM {db}.clip_scores ORDER BY scored_at DESC, clip_id LIMIT {{limit:UInt32}})
    GROUP BY clip_id
) AS a ON a.clip_id = s.clip_id
ORDER BY s.scored_at DESC, s.clip_id""", {"limit": int(limit)}),
    }


def artifacts_sql(db: str) -> str:
    """Where a clip's annotation folder is (for its trajectory plot)."""
    return (f"SELECT artifacts_uri FROM {db}.clip_annotations WHERE clip_id = {{clip:String}} AND success "
            "ORDER BY annotated_at DESC LIMIT 1")


def hq_view_sql() -> str:
    """Does the HQ view exist (so the funnel can show HQ hours)?"""
    return "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}"
