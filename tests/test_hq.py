"""HQ selection in SQL: raised thresholds, balanced quotas, deterministic seeded sampling."""

from __future__ import annotations

import pytest

from spatialvid.config import Config
from spatialvid.hq import HQResult, evenness, latest_hq_table, select_hq, waterfill_cap

from .synthetic import insert_records, population

N_CLIPS = 4000


@pytest.fixture
def skewed(cfg: Config, warehouse):  # type: ignore[no-untyped-def]
    """A skewed population of 4,000 clips in the real chDB warehouse."""
    counts = insert_records(warehouse, cfg.warehouse.database, population(N_CLIPS, seed=3))
    assert counts["clip_scores"] == N_CLIPS
    return warehouse


def _ids(client, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in client.query(f"SELECT clip_id FROM {table} ORDER BY clip_id").result_rows]


def test_waterfill_cap_takes_rare_values_whole_and_cuts_common_ones_level() -> None:
    assert waterfill_cap([10, 1, 1], 6) == pytest.approx(4.0)  # 4 + 1 + 1 = 6
    assert waterfill_cap([5, 5], 4) == pytest.approx(2.0)
    assert waterfill_cap([3, 1], 10) == 3  # short of the target: take everything
    assert evenness({"a": 1, "b": 1, "c": 1}) == pytest.approx(1.0)
    assert evenness({"a": 1, "b": 0}, 2) == pytest.approx(0.0)


def test_hq_is_more_even_than_its_input_and_respects_every_quota(cfg: Config, skewed) -> None:  # type: ignore[no-untyped-def]
    r = select_hq(skewed, cfg, hours=1.0, seed=1)
    assert r.candidate_hours > 2.0, "the population should offer more than twice the target"
    assert 1.0 <= r.selected_hours <= 1.0 + 15 / 3600, r.selected_hours
    assert r.clips == len(_ids(skewed, r.table))
    for d in r.distributions:
        assert sum(d.after.values()) == pytest.approx(r.selected_hours, rel=1e-6), d.attribute
        for value, hours in d.after.items():
            assert hours <= d.quota[value] + 1e-9, f"{d.attribute}={value}: {hours:.3f} h > quota {d.quota[value]:.3f} h"
        assert d.evenness_after > d.evenness_before + 0.05, (
            f"{d.attribute}: evenness {d.evenness_before:.3f} -> {d.evenness_after:.3f}")
    # The raised thresholds hold on every selected clip (where a score exists).
    bad = skewed.query(f"""SELECT count() FROM {r.table}
        WHERE aesthetic < 4.5 OR luminance_mean NOT BETWEEN 30 AND 120 OR ocr_ratio > 0.1
           OR motion NOT BETWEEN 3 AND 12""").result_rows[0][0]
    assert bad == 0
    # Annotation required and anomalies dropped.
    ann = skewed.query(f"""SELECT countIf(NOT success OR ifNull(anomaly, false)) FROM {cfg.warehouse.database}.clip_annotations
        WHERE clip_id IN (SELECT clip_id FROM {r.table})""").result_rows[0][0]
    assert ann == 0


def test_same_seed_same_clips_other_seed_other_equally_balanced_clips(cfg: Config, skewed) -> None:  # type: ignore[no-untyped-def]
    a = select_hq(skewed, cfg, hours=1.0, seed=7)
    b = select_hq(skewed, cfg, hours=1.0, seed=7)
    c = select_hq(skewed, cfg, hours=1.0, seed=8)
    assert (a.version, b.version, c.version) == (1, 2, 3)
    ids_a, ids_b, ids_c = _ids(skewed, a.table), _ids(skewed, b.table), _ids(skewed, c.table)
    assert ids_a == ids_b
    assert ids_a != ids_c
    overlap = len(set(ids_a) & set(ids_c)) / len(ids_a)
    assert overlap < 0.9, f"seed 8 shares {overlap:.0%} of seed 7's clips"
    for da, dc in zip(a.distributions, c.distributions):
        assert abs(da.evenness_after - dc.evenness_after) < 0.05, (da.attribute, da.evenness_after, dc.evenness_after)
    # The view and the registry point at the latest version.
    assert latest_hq_table(skewed, cfg.warehouse.database, "hq") == c.table
    assert _ids(skewed, f"{cfg.warehouse.database}.hq_hq") == ids_c


def test_short_data_takes_every_candidate(cfg: Config, skewed) -> None:  # type: ignore[no-untyped-def]
    r: HQResult = select_hq(skewed, cfg, hours=1000.0, seed=0, name="all")
    assert r.clips == r.candidates and r.selected_hours == pytest.approx(r.candidate_hours)
    assert r.table.endswith(".hq_all_v1")


def test_hq_command_prints_distributions_and_evenness(cfg: Config, skewed, capsys) -> None:  # type: ignore[no-untyped-def]
    from spatialvid.hq import format_result

    r = select_hq(skewed, cfg, hours=0.5, seed=2, name="small")
    text = format_result(r)
    assert "evenness before" in text and "scene_type" in text and "Urban" in text
    with pytest.raises(ValueError, match="lower-case"):
        select_hq(skewed, cfg, hours=1, name="Bad Name; DROP")


def test_hq_cli_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`spatialvid hq` in a fresh process owns its own embedded warehouse."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import sys
from spatialvid.config import Config
from spatialvid.warehouse import connect, init_schema
from tests.synthetic import population, insert_records
cfg = Config(data_dir={str(tmp_path / 'data')!r})
c = connect(cfg); init_schema(c, cfg)
insert_records(c, cfg.warehouse.database, population(600, seed=5))
c.close()
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(Path(__file__).parents[1]))
    out = subprocess.run([sys.executable, "-m", "spatialvid.cli", "hq", "--data-dir", str(tmp_path / "data"),
                          "--hours", "0.3", "--seed", "4", "--name", "demo"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "hq_demo_v1" in out.stdout and "evenness before" in out.stdout
    # The same selection feeds `spatialvid stats` and `spatialvid export`.
    env = {**os.environ, "SPATIALVID_HQ__NAME": "demo"}
    st = subprocess.run([sys.executable, "-m", "spatialvid.cli", "stats", "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "stats")], capture_output=True, text=True, env=env)
    assert st.returncode == 0, st.stderr
    assert "funnel: crawled" in st.stdout and (tmp_path / "stats" / "report.html").exists()
    ex = subprocess.run([sys.executable, "-m", "spatialvid.cli", "export", str(tmp_path / "out"), "-q", "--no-videos",
                         "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, env=env)
    assert ex.returncode == 0, ex.stderr
    n_rows = len((tmp_path / "out" / "metadata.csv").read_text().splitlines()) - 1
    assert f"export: {n_rows} clips" in ex.stdout and n_rows > 0


# The candidate definition before clip_latest: latest rows by argMax ... GROUP BY and joins.
_REFERENCE_CANDIDATES = """
SELECT s.clip_id AS clip_id, s.duration_s AS duration_s,
    if(empty(c.weather), 'Unknown', c.weather) AS tag_weather,
    if(notEmpty(a.motion_trends), a.motion_trends[1], if(notEmpty(c.motion_trends), c.motion_trends[1], 'None')) AS tag_motion_trend,
    multiIf(isNull(a.traj_turns), 'Unknown', a.traj_turns >= 3, '3+', toString(a.traj_turns)) AS tag_traj_turns
FROM (SELECT clip_id, argMax(duration_s, scored_at) AS duration_s, argMax(passed, scored_at) AS passed,
             argMax(aesthetic, scored_at) AS aesthetic FROM {db}.clip_scores GROUP BY clip_id) AS s
{join} JOIN (SELECT clip_id, argMax(traj_turns, annotated_at) AS traj_turns, argMax(motion_trends, annotated_at) AS motion_trends
      FROM {db}.clip_annotations WHERE success{clean} GROUP BY clip_id) AS a ON a.clip_id = s.clip_id
LEFT JOIN (SELECT clip_id, argMax(weather, captioned_at) AS weather, argMax(motion_trends, captioned_at) AS motion_trends
           FROM {db}.clip_captions GROUP BY clip_id) AS c ON c.clip_id = s.clip_id
WHERE s.passed AND (s.aesthetic IS NULL OR s.aesthetic >= {aes}) AND s.duration_s > 0"""


@pytest.mark.parametrize("drop_anomalies,require_annotation", [(True, True), (False, False)])
def test_hq_reads_the_same_candidates_and_priorities_as_the_group_by_definition(
        cfg: Config, warehouse, drop_anomalies: bool, require_annotation: bool) -> None:  # type: ignore[no-untyped-def]
    """After re-scoring, anomalous re-annotation, re-captioning and redelivered rows, the
    selection (from clip_latest, weights from a per-value count) has exactly the candidates
    and priority keys of the old definition (GROUP BY + joins, count() OVER windows)."""
    from datetime import timedelta

    from spatialvid.schemas.records import AnnotationRecord, CaptionRecord, ScoreRecord

    from .synthetic import of_type

    db = cfg.warehouse.database
    cfg.hq.balance = "weather,motion_trend,traj_turns"
    cfg.hq.allow_unscored, cfg.hq.drop_anomalies, cfg.hq.require_annotation = True, drop_anomalies, require_annotation
    cfg.hq.luminance_min, cfg.hq.luminance_max, cfg.hq.ocr_max, cfg.hq.motion_min, cfg.hq.motion_max = -1e9, 1e9, 1e9, -1e9, 1e9
    recs = population(1500, seed=8)
    insert_records(warehouse, db, recs)
    later = timedelta(minutes=5)
    changed = [s.model_copy(update={"model_version": "v2", "scored_at": s.scored_at + later, "passed": not s.passed})
               for s in of_type(recs, ScoreRecord)[::5]]
    changed += [a.model_copy(update={"model_version": "v2", "annotated_at": a.annotated_at + later, "anomaly": True,
                                     "traj_turns": 5}) for a in of_type(recs, AnnotationRecord)[::4]]
    changed += [c.model_copy(update={"model_version": "v2", "captioned_at": c.captioned_at + later, "weather": "Snowy"})
                for c in of_type(recs, CaptionRecord)[::3]]
    insert_records(warehouse, db, changed)
    insert_records(warehouse, db, recs[:700] + changed[::2])  # redelivered rows, stored twice

    r = select_hq(warehouse, cfg, hours=100.0, seed=4)  # more than the data: every candidate is selected
    ref = _REFERENCE_CANDIDATES.format(db=db, join="INNER" if require_annotation else "LEFT", aes=float(cfg.hq.aesthetic_min),
                                       clean=" AND NOT ifNull(anomaly, false)" if drop_anomalies else "")
    log_w = " + ".join(f"log(n_total / count() OVER (PARTITION BY {t}))"
                       for t in ("tag_weather", "tag_motion_trend", "tag_traj_turns"))
    want = warehouse.query(f"""
        SELECT clip_id, tag_weather, tag_motion_trend, tag_traj_turns,
            -log((toFloat64(cityHash64(4, clip_id)) + 0.5) / 18446744073709551616.0) / exp({log_w}) AS priority
        FROM (SELECT *, count() OVER () AS n_total FROM ({ref})) ORDER BY clip_id""").result_rows
    got = warehouse.query(f"SELECT clip_id, tag_weather, tag_motion_trend, tag_traj_turns, priority FROM {r.table} "
                          "ORDER BY clip_id").result_rows
    assert len(want) > 300 and r.candidates == len(want)
    assert got == want


@pytest.mark.parametrize("masked_max", [16, 0])
def test_running_sums_are_bit_for_bit_those_of_the_window_definition(
        cfg: Config, skewed, monkeypatch, masked_max: int) -> None:  # type: ignore[no-untyped-def]
    """The one-sort array running sums (masked per value, or grouped by a sort when an
    attribute has many values) equal ``sum(duration_s) OVER (PARTITION BY tag ORDER BY
    priority, clip_id)`` exactly, clip by clip, and so do the hours per value."""
    from spatialvid import hq

    monkeypatch.setattr(hq, "MASKED_VALUES_MAX", masked_max)
    db = cfg.warehouse.database
    attrs = hq.parse_attributes(cfg.hq.balance)
    skewed.command(f"CREATE TABLE {db}.cand ENGINE = Memory AS {hq.candidates_sql(db, cfg.hq, attrs)}",
                   parameters=hq._threshold_params(cfg.hq))
    counts = hq._per_value(skewed, f"{db}.cand", attrs)[0]
    params: dict = {"seed": 5, "n_total": sum(counts[attrs[0]].values())}
    for a in attrs:
        params[f"k_{a}"], params[f"n_{a}"] = list(counts[a]), list(counts[a].values())
    work = hq.work_sql(f"{db}.cand", attrs, [len(counts[a]) for a in attrs])
    cols = ", ".join(f"cum_{a}" for a in attrs)
    got = skewed.query(f"SELECT ids, pr, {cols}, {', '.join(f'tot_{a}' for a in attrs)} FROM ({work})",
                       parameters=params).result_rows[0]
    windows = ", ".join(f"sum(duration_s) OVER (PARTITION BY tag_{a} ORDER BY priority, clip_id "
                        f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_{a}" for a in attrs)
    ref = skewed.query(f"""
        SELECT clip_id, priority, {windows}, {', '.join(f'tag_{a}' for a in attrs)}
        FROM (SELECT clip_id, duration_s, priority{''.join(f', tag_{a}' for a in attrs)} FROM (
            SELECT *, arrayJoin(arrayZip(ids, pr)) AS x, x.1 AS clip_id, x.2 AS priority FROM ({work})) AS w
            INNER JOIN {db}.cand AS c USING (clip_id))
        ORDER BY priority, clip_id""", parameters=params).result_rows
    assert len(ref) > 500
    assert list(got[0]) == [r[0] for r in ref] and list(got[1]) == [r[1] for r in ref]
    n = len(attrs)
    for i, a in enumerate(attrs):
        assert list(got[2 + i]) == [r[2 + i] for r in ref], f"running sums of {a} differ"
        last = {}
        for r in ref:
            last[r[2 + n + i]] = r[2 + i]  # the value's final running sum is its total
        assert dict(zip(counts[a], got[2 + n + i])) == last, a
    # And the selection itself does not depend on the path.
    r = select_hq(skewed, cfg, hours=1.0, seed=5)
    monkeypatch.setattr(hq, "MASKED_VALUES_MAX", 16 - masked_max)
    r2 = select_hq(skewed, cfg, hours=1.0, seed=5)
    assert r.slack == r2.slack
    assert skewed.query(f"SELECT clip_id, priority FROM {r.table} ORDER BY clip_id").result_rows == \
        skewed.query(f"SELECT clip_id, priority FROM {r2.table} ORDER BY clip_id").result_rows
