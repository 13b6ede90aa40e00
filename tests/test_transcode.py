"""Clip materialisation: every clip decodes, has the configured codec and size, holds exactly
the frames of its range (read back from a frame-number barcode), and is written atomically."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from spatialvid.config import TranscodeConfig
from spatialvid.processors.transcode import (
    OutsideStore,
    TruncatedSource,
    count_frames,
    pick_encoder,
    safe_clip_path,
    transcode_clip,
)

BITS = 8
SMALL = TranscodeConfig(width=320, height=180)  # small clips keep the tests fast


def barcode(i: int, w: int, h: int) -> np.ndarray:
    """Frame ``i`` as 8 vertical bars (bit k of i: white or black) over a grey ramp."""
    img = np.full((h, w, 3), 60, np.uint8)
    bar = w // BITS
    for k in range(BITS):
        if (i >> k) & 1:
            img[:, k * bar:(k + 1) * bar] = 230
    return img


def read_barcode(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    bar = w // BITS
    row = img[h // 4: 3 * h // 4].mean(axis=(0, 2))
    return sum(1 << k for k in range(BITS) if row[k * bar + bar // 4: (k + 1) * bar - bar // 4].mean() > 145)


def write_barcode_video(path: Path, n: int, w: int = 640, h: int = 360, fps: int = 24,
                        pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """``n`` barcoded frames; ``pts``/``time_base`` make it variable-frame-rate."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "12"}
        if time_base is not None:
            s.codec_context.time_base = time_base
        for i in range(n):
            f = av.VideoFrame.from_ndarray(barcode(i, w, h), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], time_base
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def decoded_numbers(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [read_barcode(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_barcode_video(tmp_path_factory.mktemp("tc") / "barcode.mp4", 120)


def test_software_fallback_is_chosen_when_nvenc_does_not_open() -> None:
    enc = pick_encoder("hevc", "auto")
    assert enc in ("hevc_nvenc", "libx265"), enc


@pytest.mark.parametrize("start, end", [(0, 30), (37, 101), (90, 120)])
def test_clip_holds_exactly_its_frames_in_the_configured_format(source: Path, tmp_path: Path,
                                                                 start: int, end: int) -> None:
    out = transcode_clip(source, start, end, tmp_path / "clip.mp4", SMALL)
    codec, w, h, n = count_frames(out.path)
    assert (codec, w, h) == ("hevc", 320, 180), f"clip [{start},{end}) is {codec} {w}x{h}"
    assert n == out.num_frames == end - start, f"clip [{start},{end}) has {n} frames"
    assert decoded_numbers(out.path) == list(range(start, end)), f"clip [{start},{end}) is not frame-accurate"
    assert out.fps == 24.0


def test_a_truncated_source_leaves_no_file_and_no_part(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "clips" / "c.mp4"
    with pytest.raises(TruncatedSource, match="truncated"):
        transcode_clip(source, 100, 160, dest, SMALL)  # the video has 120 frames
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == [], "a half-written clip was left behind"


def test_an_existing_complete_clip_is_reused_and_a_stale_one_replaced(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "c.mp4"
    first = transcode_clip(source, 0, 30, dest, SMALL)
    again = transcode_clip(source, 0, 30, dest, SMALL)
    assert not first.reused and again.reused
    dest.write_bytes(dest.read_bytes()[:500])  # a damaged file under the final name
    fixed = transcode_clip(source, 0, 30, dest, SMALL)
    assert not fixed.reused and count_frames(dest)[3] == 30


def test_variable_frame_rate_lands_on_the_constant_grid(tmp_path: Path) -> None:
    # 60 frames at irregular times (1/48 .. 3/48 s apart): ~2.5 s at a 24 fps average.
    rng = np.random.default_rng(1)
    tb = Fraction(1, 48)
    pts = np.cumsum(np.r_[0, rng.integers(1, 4, 59)]).tolist()
    src = write_barcode_video(tmp_path / "vfr.mp4", 60, pts=pts, time_base=tb)
    with av.open(str(src)) as c:
        rate = float(c.streams.video[0].average_rate)
    end = int(pts[-1] / 48 * rate) - 2
    out = transcode_clip(src, 5, end, tmp_path / "clip.mp4", SMALL)
    assert count_frames(out.path)[3] == end - 5
    seen = decoded_numbers(out.path)
    assert seen == sorted(seen), "frames out of order"
    assert len(set(seen)) > 0.5 * len(seen)


def test_crop_pad_and_stretch_give_the_configured_size(tmp_path: Path) -> None:
    src = write_barcode_video(tmp_path / "square.mp4", 10, w=320, h=320)
    for fit in ("crop", "pad", "stretch"):
        out = transcode_clip(src, 0, 10, tmp_path / f"{fit}.mp4", TranscodeConfig(width=256, height=144, fit=fit))
        assert count_frames(out.path)[1:] == (256, 144, 10), fit


@pytest.mark.skipif(not Path("/usr/bin/ffmpeg").exists(), reason="needs the ffmpeg binary to tag a rotation")
def test_a_rotated_phone_video_comes_out_upright(tmp_path: Path) -> None:
    # Coded landscape with a bright top band, tagged "rotate 90": displayed, the band is on the right.
    coded = tmp_path / "coded.mp4"
    with av.open(str(coded), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        for _ in range(24):
            img = np.zeros((180, 320, 3), np.uint8)
            img[:60] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    rotated = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(coded), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    out = transcode_clip(rotated, 0, 24, tmp_path / "clip.mp4", TranscodeConfig(width=180, height=320))
    with av.open(str(out.path)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    assert img.shape[:2] == (320, 180)
    assert img[:, 130:].mean() > 200 and img[:, :100].mean() < 30, "the clip was not turned upright"


def test_clip_paths_never_leave_the_store(tmp_path: Path) -> None:
    p = safe_clip_path(tmp_path, "walk-1a2b", "walk-1a2b_0")
    assert p == (tmp_path / "clips" / "walk-1a2b" / "walk-1a2b_0.mp4").resolve()
    for vid, cid in (("..", "x"), ("a/../../b", "x"), ("v", "../../etc/passwd"), ("v", "")):
        with pytest.raises(OutsideStore):
            safe_clip_path(tmp_path, vid, cid)
    assert not any(os.scandir(tmp_path)), "checking a path must not create anything"
