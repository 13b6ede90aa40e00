"""The ``split`` stage: scene cuts by default, fixed windows when configured, materialised
clips on request; clip ids ``{video_id}_{index}``, and a rejected source is never split."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.processors.scenes import VERSION as SCENES_VERSION
from spatialvid.processors.split import METHOD as FIXED_METHOD
from spatialvid.processors.split import NoClips, SplitStage
from spatialvid.processors.transcode import count_frames
from spatialvid.producers.probe import probe_video
from spatialvid.runtime import StageRunner, StopFlag
from spatialvid.schemas.records import ClipRecord, DeadLetter, VideoRecord

from .conftest import wait_for
from .test_scenes import Shot, Transition, make_video

FPS = 25
# 5 s, a hard cut, 9 s: scenes [0, 125) and [125, 350) -> clips trimmed by 0.3 s (8 frames).
TIMELINE = [Shot(125, 11, 2), Transition("cut"), Shot(225, 12, 3)]


@pytest.fixture(scope="module")
def edit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("split") / "two shots.mp4"
    make_video(path, TIMELINE, w=320, h=180, fps=FPS, preset="ultrafast")
    return path


def video_record(path: Path, video_id: str = "edit-1234abcd", **extra: object) -> VideoRecord:
    p = probe_video(path)
    return VideoRecord(video_id=video_id, uri=str(path), source="local", title=path.stem, duration_s=p.duration_s,
                       fps=p.fps, width=p.width, height=p.height, num_frames=p.num_frames, codec=p.codec, **extra)


def stage(cfg: Config) -> SplitStage:
    s = SplitStage(cfg)
    s.setup()
    return s


def test_scene_cuts_make_trimmed_clips_with_deterministic_ids(cfg: Config, edit: Path) -> None:
    assert cfg.split.method == "scenes", "scene cutting must be the default"
    [clips] = stage(cfg).process_batch([video_record(edit)])
    assert isinstance(clips, list), clips
    got = [(c.clip_id, c.index, c.num_clips, c.frame_start, c.frame_end) for c in clips]
    trim = 8  # ceil(0.3 s * 25)
    assert got == [("edit-1234abcd_0", 0, 2, trim, 125 - trim), ("edit-1234abcd_1", 1, 2, 125 + trim, 350 - trim)]
    for c in clips:
        assert c.method == SCENES_VERSION and c.uri == str(edit) and c.clip_uri == ""
        assert c.timestamp_start == pytest.approx(c.frame_start / FPS) and (c.width, c.height) == (320, 180)
        assert 3.0 <= c.duration_s <= 15.0
    [again] = stage(cfg).process_batch([video_record(edit)])
    assert [c.model_dump(exclude={"produced_at"}) for c in again] == [c.model_dump(exclude={"produced_at"}) for c in clips]


def test_fixed_windows_stay_selectable(cfg: Config, edit: Path) -> None:
    cfg.split.method = "fixed"
    cfg.split.window_s = 5.0
    [clips] = stage(cfg).process_batch([video_record(edit)])
    assert [(c.frame_start, c.frame_end) for c in clips] == [(0, 125), (125, 250), (250, 350)]
    assert {c.method for c in clips} == {FIXED_METHOD}


def test_a_rejected_source_is_not_split_and_only_short_scenes_is_an_error(cfg: Config, edit: Path,
                                                                           tmp_path: Path) -> None:
    rejected = video_record(edit, accepted=False, reject_reasons=["resolution: 320x180 is below 720p"])
    short = tmp_path / "short.mp4"
    make_video(short, [Shot(60, 1), Transition("cut"), Shot(60, 2)], w=160, h=96, fps=FPS, preset="ultrafast")
    results = stage(cfg).process_batch([rejected, video_record(short, "short-0000")])
    assert results[0] == [], "a rejected source must yield no clip"
    assert isinstance(results[1], NoClips) and "2 scene(s)" in str(results[1]), results[1]


def test_materialised_clips_decode_in_the_configured_format_with_their_frame_count(cfg: Config, edit: Path) -> None:
    cfg.split.materialize = True
    cfg.transcode.width, cfg.transcode.height = 256, 144
    [clips] = stage(cfg).process_batch([video_record(edit)])
    assert len(clips) == 2
    store = cfg.artifacts_dir.resolve()
    for c in clips:
        path = Path(c.clip_uri)
        assert path.is_file() and store in path.parents, c.clip_uri
        assert path.name == f"{c.clip_id}.mp4"
        assert (c.clip_codec, c.clip_width, c.clip_height) == ("hevc", 256, 144)
        assert count_frames(path) == ("hevc", 256, 144, c.num_frames), f"clip {c.clip_id} does not match its record"
    assert not list(store.rglob("*.part-*")), "temporary files left behind"


def test_the_stage_runs_on_the_real_broker_and_dead_letters_bad_videos(cfg: Config, edit: Path,
                                                                        tmp_path: Path) -> None:
    bad = tmp_path / "gone.mp4"  # probed fine once, deleted before the split
    bad.write_bytes(edit.read_bytes())
    good, gone = video_record(edit), video_record(bad, "gone-0000")
    bad.unlink()
    out = RecordProducer(cfg)
    out.send(good)
    out.send(gone)
    out.flush()
    stop = StopFlag()
    runner = StageRunner(SplitStage(cfg), cfg, stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.counters.processed + runner.counters.dead_letters >= 2, 90, "both videos handled")
    finally:
        stop.set()
        thread.join(30)
    assert runner.counters.produced == 2 and runner.counters.dead_letters == 1, runner.counters
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap, "group.id": "check-split",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([cfg.topic("clips"), cfg.topic("deadletter")])
    msgs: list = []
    wait_for(lambda: msgs.extend(m for m in consumer.consume(10, 1.0) if not m.error()) or len(msgs) >= 3, 30,
             "2 clips and 1 dead letter on the topics")
    consumer.close()
    clips = [ClipRecord.model_validate_json(m.value()) for m in msgs if m.topic() == cfg.topic("clips")]
    letters = [DeadLetter.model_validate_json(m.value()) for m in msgs if m.topic() == cfg.topic("deadletter")]
    assert sorted(c.clip_id for c in clips) == ["edit-1234abcd_0", "edit-1234abcd_1"]
    assert [(d.stage, d.error_class, d.source_key) for d in letters] == [("split", "SceneDetectionError", "gone-0000")]
    assert "no such file" in letters[0].error_message
