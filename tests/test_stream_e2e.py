"""End to end against the real broker (tansu) and the real ClickHouse engine (chDB).

Stage workers run as real `spatialvid process` processes; the sink runs in the test
process (chDB allows one process per warehouse folder).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from confluent_kafka import Consumer

from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.pipeline import spawn_stage
from spatialvid.producers.local import LocalProducer
from spatialvid.schemas.records import ClipRecord, ScoreRecord

from .conftest import SinkThread, wait_for


def count(client, sql: str) -> int:  # type: ignore[no-untyped-def]
    return int(client.query(sql).result_rows[0][0])


def test_videos_in_scored_clips_out(cfg: Config, warehouse, sample_videos: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    cfg.split.method = "fixed"  # this test checks the spine, with clip counts known in advance
    cfg.split.window_s = 3.5  # walk (7 s) -> 2 clips, dark (4 s) -> 1, static (4 s) -> 1
    workers = [spawn_stage(cfg, s, tmp_path) for s in ("split", "score")]
    try:
        with SinkThread(cfg, warehouse):
            stats = LocalProducer(cfg, [str(p) for p in sample_videos.values()]).run(RecordProducer(cfg))
            assert stats.videos == 3 and stats.dead_letters == 0
            wait_for(lambda: count(warehouse, f"SELECT count() FROM {db}.clip_scores") >= 4, 120, "4 score rows")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(30) == 0, f"worker exited uncleanly; log: {(tmp_path / 'score.log').read_text()[-2000:]}"

    assert count(warehouse, f"SELECT count() FROM {db}.videos") == 3
    assert count(warehouse, f"SELECT count() FROM {db}.clips") == 4
    rows = warehouse.query(
        f"SELECT v.title, s.luminance_pass, s.motion_pass, s.passed, s.aesthetic_pass, s.ocr_pass, s.reject_reasons, "
        f"s.aesthetic_model, s.ocr_model, s.aesthetic "
        f"FROM {db}.clip_scores AS s JOIN {db}.videos AS v USING video_id ORDER BY s.clip_id").result_rows
    assert len(rows) == 4, "one score row per clip"
    verdicts = {}
    for title, lum_ok, mot_ok, ok, aes_ok, ocr_ok, why, aes_model, ocr_model, laion in rows:
        verdicts.setdefault(title, set()).add((lum_ok, mot_ok, ok))
        # All four filters ran, with the offline backends: the proxy is named as such and
        # never fills the LAION score column.
        assert aes_model == "brisque-proxy" and laion is None and ocr_model.startswith("rapidocr"), rows
        assert ocr_ok, f"{title}: the samples carry no text: {why}"
        assert ok == (lum_ok and mot_ok and aes_ok and ocr_ok), f"{title}: passed must be the AND of the filters"
        assert bool(why) != ok, f"{title}: a rejection must carry its reason ({why})"
    assert verdicts["walk"] == {(True, True, True)}, f"walk should pass luminance and motion: {rows}"
    # Dark footage also has little contrast, so its VMAF motion is low too: only luminance is asserted.
    assert {(lum, ok) for lum, _, ok in verdicts["dark"]} == {(False, False)}, f"dark should fail luminance: {rows}"
    assert verdicts["static"] == {(True, False, False)}, f"static should fail motion only: {rows}"
    # The materialized view counted every verdict once.
    rates = dict(warehouse.query(f"SELECT filter, total FROM {db}.pass_rates").result_rows)
    assert rates == {"aesthetic": 4, "luminance": 4, "motion": 4, "ocr": 4, "all": 4}


def clips_of(video: Path, n: int, seconds: float = 3.0) -> list[ClipRecord]:
    """n overlapping 3 s clips of one video (a cheap way to get many clips)."""
    fps, total = 24.0, 168
    out = []
    for i in range(n):
        a = (i * 7) % (total - int(seconds * fps))
        b = a + int(seconds * fps)
        out.append(ClipRecord(clip_id=f"walk-kill_{i}", video_id="walk-kill", index=i, num_clips=n, uri=str(video),
                              frame_start=a, frame_end=b, timestamp_start=a / fps, timestamp_end=b / fps, fps=fps,
                              width=640, height=360, method="test"))
    return out


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    cfg: Config, warehouse, sample_videos: dict[str, Path], tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    db, n = cfg.warehouse.database, 24
    cfg.runtime.batch_size = 4
    out = RecordProducer(cfg)
    for c in clips_of(sample_videos["walk"], n):
        out.send(c)
    out.flush()
    log = tmp_path / "score.log"
    with SinkThread(cfg, warehouse) as sink:
        worker = spawn_stage(cfg, "score", tmp_path)
        wait_for(lambda: count(warehouse, f"SELECT count() FROM {db}.clip_scores") >= 4, 120, "the first scores")
        worker.send_signal(signal.SIGKILL)  # no chance to finish the batch or commit
        worker.wait(10)
        scored_at_kill = count(warehouse, f"SELECT count() FROM {db}.clip_scores")
        assert scored_at_kill < n, "the worker finished before it was killed; the test proves nothing"
        worker = spawn_stage(cfg, "score", tmp_path)
        try:
            wait_for(lambda: count(warehouse, f"SELECT uniqExact(clip_id) FROM {db}.clip_scores") >= n, 180,
                     f"all {n} clips scored after the restart (log: {log})")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        rows = count(warehouse, f"SELECT count() FROM {db}.clip_scores")
        final = count(warehouse, f"SELECT count() FROM {db}.clip_scores FINAL")
        distinct = count(warehouse, f"SELECT uniqExact(clip_id) FROM {db}.clip_scores")
        assert rows == final == distinct == n, f"rows={rows} FINAL={final} distinct={distinct}, expected {n} each"
        print(f"killed after {scored_at_kill} scores; sink skipped {sink.sink.counters.duplicates} redelivered rows")


def test_redelivered_messages_never_become_second_rows(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    scores = [ScoreRecord(clip_id=f"v_{i}", video_id="v", model_id="m", model_version="1", passed=True)
              for i in range(50)]
    out = RecordProducer(cfg)
    with SinkThread(cfg, warehouse) as sink:
        for r in scores + scores[:30]:  # a producer that resent part of its output
            out.send(r)
        out.flush()
        wait_for(lambda: sink.sink.counters.consumed >= 80, 60, "80 messages through the sink")
        for r in scores[10:20]:  # and a redelivery in a later batch
            out.send(r)
        out.flush()
        wait_for(lambda: sink.sink.counters.consumed >= 90, 60, "90 messages through the sink")
    assert count(warehouse, f"SELECT count() FROM {db}.clip_scores") == 50
    assert count(warehouse, f"SELECT count() FROM {db}.clip_scores FINAL") == 50
    # A new model version is a new row; the latest view reads it.
    with SinkThread(cfg, warehouse) as sink:
        out.send(ScoreRecord(clip_id="v_0", video_id="v", model_id="m", model_version="2", passed=False))
        out.flush()
        wait_for(lambda: sink.sink.counters.consumed >= 1, 60, "the re-score")
    assert count(warehouse, f"SELECT count() FROM {db}.clip_scores") == 51
    latest = warehouse.query(f"SELECT model_version, passed FROM {db}.clip_scores_latest WHERE clip_id = 'v_0'").result_rows
    assert latest == [("2", False)]


def write_faststart(path: Path, frames: int = 120) -> Path:
    """A 640x360 H.264 MP4 with its index at the front, so cutting its tail leaves a
    file that opens fine but ends early (the nasty kind of truncation)."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        base = rng.integers(0, 255, (360, 700, 3), dtype=np.uint8)
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, i % 60: i % 60 + 640]), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_bad_input_becomes_dead_letters_and_the_rest_flows(
    cfg: Config, warehouse, sample_videos: dict[str, Path], tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from .test_probe import make_audio_only

    db = cfg.warehouse.database
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(40_000))
    (bad / "empty.mp4").write_bytes(b"")
    make_audio_only(bad / "no_video.m4a")
    cfg.split.method = "fixed"  # the truncated video must reach the scorer (scene cutting would stop it earlier)
    full = write_faststart(tmp_path / "full.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(full[: int(len(full) * 0.6)])
    workers = [spawn_stage(cfg, s, tmp_path) for s in ("split", "score")]
    try:
        with SinkThread(cfg, warehouse):
            out = RecordProducer(cfg)
            stats = LocalProducer(cfg, [str(bad / "corrupt.mp4"), str(bad / "empty.mp4"), str(bad / "no_video.m4a"),
                                        str(bad / "truncated.mp4"), str(sample_videos["walk"])]).run(out)
            assert stats.dead_letters == 3 and stats.videos == 2, stats
            out.send_raw("clips", b"garbage-clip", b'{"clip_id": "x", "fps": "not a number"}')
            out.send_raw("scores", b"garbage-score", b"\xff\xfe\x00binary")
            out.flush()
            wait_for(lambda: count(warehouse, f"SELECT count() FROM {db}.deadletters") >= 6, 120, "6 dead letters")
            wait_for(lambda: count(warehouse, f"SELECT count() FROM {db}.clip_scores") >= 1, 120, "the good clip's score")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(30)
    letters = warehouse.query(
        f"SELECT stage, error_class, source_key, error_message FROM {db}.deadletters ORDER BY stage, error_class").result_rows
    by_class = {(s, c): (k, m) for s, c, k, m in letters}
    assert set(by_class) == {
        ("produce-local", "EmptyFile"), ("produce-local", "UnreadableVideo"), ("produce-local", "NoVideoStream"),
        ("score", "TruncatedClip"), ("score", "MalformedRecord"), ("sink", "MalformedRecord"),
    }, letters
    assert "truncated" in by_class[("score", "TruncatedClip")][1]
    assert "fps" in by_class[("score", "MalformedRecord")][1]
    assert by_class[("score", "MalformedRecord")][0] == "garbage-clip"
    # The good video went all the way through.
    assert count(warehouse, f"SELECT count() FROM {db}.clip_scores WHERE clip_id LIKE 'walk-%'") == 1
    # And the dead letters are on the topic too, with the original payload.
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap, "group.id": f"check-{os.getpid()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([cfg.topic("deadletter")])
    seen = []
    wait_for(lambda: seen.extend(m for m in consumer.consume(100, 1.0) if not m.error()) or len(seen) >= 6, 30,
             "6 dead letters on the topic")
    consumer.close()
    payloads = [json.loads(m.value()) for m in seen]
    assert any(p["error_class"] == "MalformedRecord" and "not a number" in p["payload"] for p in payloads)


def test_cli_run_over_sample_videos(sample_videos: dict[str, Path], tmp_path: Path) -> None:
    """The user's command: embedded broker + warehouse, progress, a summary, then `sql`."""
    env = {**os.environ, "SPATIALVID_SPLIT__METHOD": "fixed", "SPATIALVID_SPLIT__WINDOW_S": "3.5"}
    data = tmp_path / "data"
    folder = sample_videos["walk"].parent
    run = subprocess.run([sys.executable, "-m", "spatialvid.cli", "run", str(folder), "--data-dir", str(data),
                          "--json", "--timeout", "240", "--until", "score"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["videos"] == 3 and summary["clips"] == 4 and summary["scored"] == 4
    assert summary["passed_all"] == 2, summary  # the two walk clips
    passed = {f["filter"]: f["passed"] for f in summary["filters"]}
    assert set(passed) == {"aesthetic", "luminance", "motion", "ocr"}, summary  # all four filters ran
    assert (passed["luminance"], passed["motion"], passed["ocr"]) == (3, 2, 4), summary  # dark fails both
    q = subprocess.run([sys.executable, "-m", "spatialvid.cli", "sql", "--data-dir", str(data), "--format", "json",
                        "SELECT count() AS n FROM spatialvid.clip_scores WHERE passed = {p:Bool}", "--param", "p=true"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [{"n": 2}]
    denied = subprocess.run([sys.executable, "-m", "spatialvid.cli", "sql", "--data-dir", str(data),
                             "DROP TABLE spatialvid.clips"], env=env, capture_output=True, text=True, timeout=120)
    assert denied.returncode == 2 and "read-only" in denied.stderr


def test_annotation_records_land_with_metrics_as_columns(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    from spatialvid.processors.geometry.instructions import instruction_summary, motion_instructions
    from spatialvid.processors.geometry.metrics import trajectory_metrics
    from spatialvid.schemas.records import AnnotationRecord

    n = 75
    poses = np.zeros((n, 7))
    poses[:, 2] = -0.02 * np.arange(n)  # forward walk, 1.48 units
    poses[:, 6] = 1.0
    m = trajectory_metrics(poses)
    rec = AnnotationRecord(clip_id="walk_0", video_id="walk", model_id="analytic", model_version="1", success=True,
                           registered_share=1.0, num_poses=n, move_dist=m.move_dist, dist_level=m.dist_level,
                           rot_angle=m.rot_angle, traj_turns=m.traj_turns, anomaly=m.anomaly,
                           instruction_steps=instruction_summary(motion_instructions(poses)),
                           artifacts_uri="/data/annotations/group_0001/walk_0")
    out = RecordProducer(cfg)
    with SinkThread(cfg, warehouse) as sink:
        out.send(rec)
        out.send(rec)  # redelivered
        out.flush()
        wait_for(lambda: sink.sink.counters.consumed >= 2, 60, "two annotation messages")
    rows = warehouse.query(f"SELECT move_dist, dist_level, traj_turns, instruction_steps['Dolly In'] "
                           f"FROM {cfg.warehouse.database}.clip_annotations").result_rows
    assert len(rows) == 1, rows
    move_dist, dist_level, turns, dolly = rows[0]
    assert move_dist == pytest.approx(1.48) and dist_level == 3 and turns == 0
    assert dolly > 0
