"""Probing real and broken files: every refusal is a VideoError with a clear reason."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from spatialvid.config import Config
from spatialvid.producers.probe import EmptyFile, NoVideoStream, UnreadableVideo, probe_video


def test_probe_reads_the_facts_of_a_real_video(sample_videos: dict[str, Path]) -> None:
    p = probe_video(sample_videos["walk"])
    assert (p.width, p.height, p.codec) == (640, 360, "h264")
    assert p.fps == pytest.approx(24.0)
    assert p.duration_s == pytest.approx(7.0, abs=0.1)
    assert p.num_frames == 168


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.mp4"
    f.write_bytes(b"")
    with pytest.raises(EmptyFile, match="empty"):
        probe_video(f)


def test_corrupt_file(tmp_path: Path) -> None:
    f = tmp_path / "corrupt.mp4"
    f.write_bytes(np.random.default_rng(1).bytes(50_000))
    with pytest.raises(UnreadableVideo, match="corrupt"):
        probe_video(f)


def test_truncated_file_head_only(tmp_path: Path, sample_videos: dict[str, Path]) -> None:
    data = sample_videos["walk"].read_bytes()
    f = tmp_path / "truncated.mp4"
    f.write_bytes(data[: len(data) // 3])  # moov atom at the end is cut away
    with pytest.raises(UnreadableVideo):
        probe_video(f)


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(NoVideoStream, match="no video stream .*audio"):
        probe_video(make_audio_only(tmp_path / "audio_only.m4a"))


def test_titles_decode_percent_escapes_in_urls_only(cfg: Config, tmp_path: Path) -> None:
    """``%20`` in a URL is a space; in a file name it is three literal characters."""
    from spatialvid.producers.local import LocalProducer

    local = tmp_path / "tour%20day.mp4"
    local.write_bytes(b"")
    titles = [c.title for c in LocalProducer(cfg, [str(local), "http://127.0.0.1:9/v/tour%20night.mp4"]).candidates()]
    assert titles == ["tour%20day", "tour night"]
