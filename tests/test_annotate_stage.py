"""The annotate stage end to end: real broker, real chDB, a real `spatialvid process
annotate` worker, rendered clips with known camera paths."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap", reason="the annotate stage's default backend needs pycolmap (a core dependency: pip install 'pycolmap>=4.2,<5')")

from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.pipeline import spawn_stage
from spatialvid.processors.geometry.align import trajectory_error
from spatialvid.processors.geometry.annotate import main_trends, release_group
from spatialvid.producers.rendered import render_sequence, write_video
from spatialvid.schemas.records import ScoreRecord
from spatialvid.sinks.release import read_clip_annotations

from .conftest import SinkThread, wait_for

FPS = 10.0


def score(clip_id: str, uri: str, frames: int, passed: bool = True) -> ScoreRecord:
    return ScoreRecord(clip_id=clip_id, video_id=clip_id.rsplit("_", 1)[0], model_id="test", model_version="1",
                       passed=passed, uri=uri, frame_start=0, frame_end=frames, fps=FPS,
                       reject_reasons=[] if passed else ["motion: too low"])


def test_passed_clips_get_annotations_artifacts_and_dead_letters(
    cfg: Config, warehouse, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    db = cfg.warehouse.database
    cfg.annotate.threads = 2
    walk = render_sequence("handheld", 320, 180, fps=FPS, duration_s=4.0)
    still = render_sequence("static", 320, 180, fps=FPS, duration_s=3.0, frame_indexes=np.arange(0, 30, 2))
    walk_uri = str(write_video(walk.frames, tmp_path / "walk.mp4", fps=FPS))
    still_uri = str(write_video(np.repeat(still.frames, 2, axis=0), tmp_path / "still.mp4", fps=FPS))
    out = RecordProducer(cfg)
    out.send(score("walk_0", walk_uri, 40))
    out.send(score("still_0", still_uri, 30))
    out.send(score("rejected_0", walk_uri, 40, passed=False))  # not annotated at all
    out.send(score("missing_0", str(tmp_path / "nope.mp4"), 40))  # unreadable: a dead letter
    out.send_raw("scores", "junk_0", b'{"clip_id": "junk_0"}')  # malformed: a dead letter
    out.flush()
    worker = spawn_stage(cfg, "annotate", tmp_path)
    try:
        with SinkThread(cfg, warehouse):
            wait_for(lambda: warehouse.query(f"SELECT count() FROM {db}.clip_annotations").result_rows[0][0] >= 2
                     and warehouse.query(f"SELECT count() FROM {db}.deadletters").result_rows[0][0] >= 2,
                     240, "2 annotations and 2 dead letters")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, (tmp_path / "annotate.log").read_text()[-3000:]

    rows = {r[0]: r[1:] for r in warehouse.query(
        f"SELECT clip_id, success, registered_share, num_poses, failure_reason, artifacts_uri, model_id, "
        f"model_version, move_dist, motion_trends, dynamic_ratio, scale_convention FROM {db}.clip_annotations").result_rows}
    assert set(rows) == {"walk_0", "still_0"}, f"one annotation per passed, readable clip: {sorted(rows)}"
    ok, share, n, why, art, model, version, move, trends, dyn, scale = rows["walk_0"]
    assert ok and share == 1.0 and n == 20, f"walk_0: success={ok} share={share} poses={n} ({why})"
    assert model == "colmap" and version.startswith("pycolmap-") and scale
    assert move > 0 and trends and trends != ["Stay"], f"walk_0 moves: moveDist {move}, trends {trends}"
    assert dyn is not None and dyn < 0.05, f"a static scene has (almost) no dynamic pixels: {dyn}"
    assert f"group_{release_group('walk_0', cfg.annotate.release_groups):04d}" in art
    ann = read_clip_annotations(art)
    assert ann.poses.shape == (20, 7) and ann.intrinsics.shape == (20, 4) and ann.dyn_masks.shape == (20, 180, 320)
    assert ann.frame_indexes.tolist() == list(range(0, 40, 2)), "indexes.txt maps poses to video frames"
    assert np.allclose(ann.intrinsics[:, 2:], 0.5) and abs(ann.intrinsics[0, 0] - walk.intrinsics[0, 0] / 320) < 0.02
    err = trajectory_error(ann.poses, walk.poses[ann.frame_indexes])
    assert err.rot_median_deg < 1.0 and err.ate_pct < 2.0, f"walk_0 poses as written: {err}"
    assert ann.instructions, "instructions.json written"

    ok, share, n, why, art, *_ = rows["still_0"]
    assert not ok and n == 0 and art == "" and why, f"still_0 must be unsuccessful with a reason: {why!r}"

    dead = dict(warehouse.query(f"SELECT source_key, error_class FROM {db}.deadletters WHERE stage = 'annotate'").result_rows)
    assert set(dead) == {"missing_0", "junk_0"}, dead
    assert dead["junk_0"] == "MalformedRecord"


def test_main_trends_and_release_group() -> None:
    assert main_trends({"Dolly In": 10, "Pan Right": 4, "Tilt Up": 1, "Stay": 20}) == ["Dolly In", "Pan Right"]
    assert main_trends({"Stay": 12}) == ["Stay"]
    assert release_group("a_0", 1000) == release_group("a_0", 1000) and 0 <= release_group("b_3", 7) < 7
