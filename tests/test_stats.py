"""`spatialvid stats`: the paper's statistics from SQL, checked against the records themselves."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from spatialvid.config import Config
from spatialvid.hq import select_hq
from spatialvid.schemas.records import AnnotationRecord, CaptionRecord, ClipRecord, ScoreRecord, VideoRecord
from spatialvid.stats import METRICS, write_report
from spatialvid.warehouse import run_readonly

from .synthetic import insert_records, of_type, population

pytest.importorskip("matplotlib", reason="the statistics plots need matplotlib (the [plot] extra)")


def test_stats_report_matches_the_records(cfg: Config, warehouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    records = population(1200, seed=11)
    insert_records(warehouse, db, records)
    hq = select_hq(warehouse, cfg, hours=0.3, seed=0)
    lock = threading.Lock()
    rep, files = write_report(lambda sql, p: run_readonly(warehouse, sql, p, lock), db, tmp_path / "stats",
                              hq_table=hq.table, compare={"other_seed": select_hq(warehouse, cfg, hours=0.3, seed=9).table})

    videos, clips = of_type(records, VideoRecord), of_type(records, ClipRecord)
    scores, anns, caps = of_type(records, ScoreRecord), of_type(records, AnnotationRecord), of_type(records, CaptionRecord)
    ok_anns = [a for a in anns if a.success]
    funnel = {s: (c, h) for s, c, h in rep.funnel}
    assert [s for s, _, _ in rep.funnel] == ["crawled", "clips", "scored", "passed", "annotated", "captioned", "hq"]
    assert funnel["crawled"][0] == len(videos)
    assert funnel["crawled"][1] == pytest.approx(sum(v.duration_s for v in videos) / 3600)
    assert funnel["clips"][1] == pytest.approx(sum(c.duration_s for c in clips) / 3600)
    assert funnel["passed"][0] == sum(s.passed for s in scores)
    assert funnel["annotated"][0] == len(ok_anns)
    assert funnel["captioned"][0] == len(caps)
    assert funnel["hq"] == (hq.clips, pytest.approx(hq.selected_hours))
    assert [h for _, _, h in rep.funnel][1:5] == sorted([h for _, _, h in rep.funnel][1:5], reverse=True)

    assert rep.motion["full"] == dict(Counter(t for a in ok_anns for t in a.motion_trends))
    assert rep.tags["full"]["weather"] == dict(Counter(c.weather for c in caps))
    assert sum(rep.tags["hq"]["lighting"].values()) == hq.clips
    assert sum(rep.histograms["full"]["aesthetic"]) == len(scores)
    assert sum(rep.histograms["full"]["traj_turns"]) == len(ok_anns)
    assert sum(rep.histograms["hq"]["motion"]) == hq.clips
    lo, hi, bins = METRICS["motion"][2:]
    first_bin = sum(1 for s in scores if s.motion < lo + (hi - lo) / bins)
    assert rep.histograms["full"]["motion"][0] == first_bin
    mean_summary = sum(len(c.scene_summary.split()) for c in caps) / len(caps)
    assert rep.caption_means["full"]["scene_summary"] == pytest.approx(mean_summary)
    assert rep.caption_lengths["full"]["scene_summary"] == dict(Counter(len(c.scene_summary.split()) for c in caps))
    # A more even HQ: Urban's share falls from the full set to the HQ set.
    full, hqt = rep.tags["full"]["scene_type_first"], rep.tags["hq"]["scene_type_first"]
    assert hqt["Urban"] / sum(hqt.values()) < full["Urban"] / sum(full.values())

    for name in ("funnel", "motion_direction", "tag_weather", "scene_type_sunburst", "hist_rot_angle", "caption_lengths"):
        assert files[name].read_bytes()[:4] == b"\x89PNG", name
    md = files["markdown"].read_text()
    assert "| crawled | %d |" % len(videos) in md and "![funnel](funnel.png)" in md
    assert "<table>" in files["html"].read_text() and json.loads(files["json"].read_text())["funnel"]


def test_stats_rejects_a_set_that_is_not_a_table(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    from spatialvid.stats import compute

    with pytest.raises(ValueError, match="not a table name"):
        compute(lambda sql, p: run_readonly(warehouse, sql, p), cfg.warehouse.database,
                hq_table="x; DROP TABLE clips")


def _latest_rows(client, sql: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return sorted(tuple(r) for r in client.query(f"SELECT * FROM {sql} ORDER BY clip_id").result_rows)


def test_clip_latest_equals_the_group_by_definition(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    """The insert-time per-clip table gives exactly the argMax ... GROUP BY rows, after
    redeliveries, re-scoring with new model versions (newer and late older ones), failed
    and anomalous re-annotations, re-captioning, and a backfill of an existing warehouse."""
    from datetime import timedelta

    from spatialvid.stats import LATEST, latest_groupby_sql, latest_sql
    from spatialvid.warehouse import init_schema

    db = cfg.warehouse.database
    records = population(240, seed=5)
    insert_records(warehouse, db, records)
    scores, anns, caps = of_type(records, ScoreRecord), of_type(records, AnnotationRecord), of_type(records, CaptionRecord)
    later, earlier = timedelta(minutes=5), timedelta(minutes=-5)
    changed = [s.model_copy(update={"model_version": "v2", "scored_at": s.scored_at + later, "passed": not s.passed,
                                    "duration_s": s.duration_s + 1, "aesthetic": None}) for s in scores[::3]]
    changed += [s.model_copy(update={"model_version": "v0", "scored_at": s.scored_at + earlier, "passed": not s.passed})
                for s in scores[1::4]]
    changed += [a.model_copy(update={"model_version": "v2", "annotated_at": a.annotated_at + later, "success": False,
                                     "move_dist": 99.0}) for a in anns[::3]]
    changed += [a.model_copy(update={"model_version": "v3", "annotated_at": a.annotated_at + later, "success": True,
                                     "anomaly": True, "traj_turns": 7, "motion_trends": ["Pan Left"]}) for a in anns[1::3]]
    changed += [c.model_copy(update={"model_version": "v2", "captioned_at": c.captioned_at + later, "weather": "Snowy",
                                     "scene_summary": "", "opt_cam_motion": "a b  c"}) for c in caps[::2]]
    insert_records(warehouse, db, changed)
    insert_records(warehouse, db, records[: len(records) // 2] + changed[::2])  # redelivered rows, stored twice
    assert len(changed) > 100

    def check() -> None:
        for source in LATEST:
            got, want = _latest_rows(warehouse, latest_sql(db, source)), _latest_rows(warehouse, latest_groupby_sql(db, source))
            assert got == want, source
            assert len(got) > 50

    check()
    # An existing warehouse from before clip_latest: the schema fills it once, and again is a no-op.
    warehouse.command(f"TRUNCATE TABLE {db}.clip_latest")
    init_schema(warehouse, cfg)
    check()
    rows = warehouse.query(f"SELECT count() FROM {db}.clip_latest").result_rows[0][0]
    init_schema(warehouse, cfg)
    assert warehouse.query(f"SELECT count() FROM {db}.clip_latest").result_rows[0][0] == rows
    check()
    # A warehouse whose clip_latest still holds argMax states (the earlier layout): the
    # schema drops it with its views and rebuilds it from the record tables.
    warehouse.command(f"DROP VIEW {db}.clip_latest_scores_mv")
    warehouse.command(f"DROP TABLE {db}.clip_latest")
    warehouse.command(f"CREATE TABLE {db}.clip_latest (clip_id String, score_rows SimpleAggregateFunction(sum, UInt64), "
                      f"s_aesthetic AggregateFunction(argMax, Nullable(Float64), DateTime64(3, 'UTC'))) "
                      f"ENGINE = AggregatingMergeTree ORDER BY clip_id")
    warehouse.command(f"CREATE MATERIALIZED VIEW {db}.clip_latest_scores_mv TO {db}.clip_latest AS SELECT clip_id, "
                      f"toUInt64(count()) AS score_rows, argMaxState(aesthetic, scored_at) AS s_aesthetic "
                      f"FROM {db}.clip_scores GROUP BY clip_id")
    init_schema(warehouse, cfg)
    check()
