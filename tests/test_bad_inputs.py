"""Bad input at the front of the pipeline (issue 3, item 5): every file either becomes clips
that decode in the configured format with their recorded frame count, or a dead letter with
a clear reason. Nothing crashes, and nothing is written outside the artifact store."""

from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from spatialvid.config import Config
from spatialvid.processors.split import SplitStage
from spatialvid.processors.transcode import count_frames
from spatialvid.producers.crawl import CrawlProducer, SeenIndex
from spatialvid.producers.local import LocalProducer
from spatialvid.schemas.records import DeadLetter, VideoRecord

from .media_site import Item, MediaSite, make_video
from .test_crawl import Collect, crawl_cfg
from .test_probe import make_audio_only
from .test_stream_e2e import write_faststart


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def through_front(cfg: Config, inputs: list[str]) -> tuple[list[VideoRecord], list[DeadLetter], dict[str, object]]:
    """Produce (probe) the inputs, then split + materialise every video record."""
    cfg.split.materialize = True
    cfg.transcode.width, cfg.transcode.height = 256, 144
    out = Collect()
    LocalProducer(cfg, inputs).run(out)  # type: ignore[arg-type]
    videos = [r for r in out.records if isinstance(r, VideoRecord)]
    letters = [r for r in out.records if isinstance(r, DeadLetter)]
    stage = SplitStage(cfg)
    stage.setup()
    results = dict(zip([v.title for v in videos], stage.process_batch(videos)))
    return videos, letters, results


def assert_clips_are_sound(title: str, result: object) -> int:
    assert isinstance(result, list), f"{title}: expected clips, got {result!r}"
    for c in result:
        assert count_frames(c.clip_uri) == ("hevc", 256, 144, c.num_frames), f"{title}: clip {c.clip_id} is unsound"
    return len(result)


def test_broken_files_are_dead_letters_with_their_reason(cfg: Config, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.mp4").write_bytes(b"")
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(30_000))
    make_audio_only(d / "no_video.m4a")
    full = write_faststart(tmp_path / "full.mp4", frames=120).read_bytes()
    (d / "truncated.mp4").write_bytes(full[: int(len(full) * 0.55)])
    before = files_under(tmp_path)
    videos, letters, results = through_front(cfg, [str(f) for f in sorted(d.iterdir())])
    classes = {Path(json.loads(dl.payload)["ref"]).name: dl.error_class for dl in letters}
    assert classes == {"empty.mp4": "EmptyFile", "corrupt.mp4": "UnreadableVideo", "no_video.m4a": "NoVideoStream"}
    assert all(dl.error_message and dl.stage == "produce-local" for dl in letters)
    # The truncated file opens (its index is at the front) and is cut where it really ends:
    # 66 of 120 frames at 24 fps is 2.75 s, too short for a clip -> the stage's dead letter.
    assert [v.title for v in videos] == ["truncated"]
    assert type(results["truncated"]).__name__ == "NoClips" and "0.3s" in str(results["truncated"])
    new = files_under(tmp_path) - before
    assert all(cfg.artifacts_dir in p.parents for p in new), f"written outside the store: {new}"


def write_vfr(path: Path, n: int = 110) -> Path:
    """H.264 at irregular frame times (1/48 to 3/48 s apart)."""
    rng = np.random.default_rng(5)
    pts = np.cumsum(np.r_[0, rng.integers(1, 4, n - 1)]).tolist()
    yy, xx = np.mgrid[0:180, 0:320]
    base = np.stack([(xx + yy) % 256, (2 * xx) % 256, (xx * 3 + 50) % 256], axis=-1).astype(np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        s.codec_context.time_base = Fraction(1, 48)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(base, pts[i], axis=1)), format="rgb24")
            f.pts, f.time_base = pts[i], Fraction(1, 48)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_variable_frame_rate_rotated_and_4k_sources_make_sound_clips(cfg: Config, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_vfr(d / "vfr.mp4")
    coded = make_video(tmp_path / "coded.mp4", 320, 180, seconds=4.0)
    if Path("/usr/bin/ffmpeg").exists():
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(coded), "-c", "copy",
                        "-metadata:s:v:0", "rotate=90", str(d / "phone.mp4")], check=True)
    make_video(d / "uhd.mp4", 3840, 2160, seconds=4.0, fps=8)
    before = files_under(tmp_path)
    videos, letters, results = through_front(cfg, [str(d)])
    assert letters == [], letters
    for title, result in results.items():
        assert assert_clips_are_sound(title, result) >= 1, title
    if "phone" in results:
        assert [v.rotation for v in videos if v.title == "phone"] == [90]
    new = files_under(tmp_path) - before
    assert new and all(cfg.artifacts_dir in p.parents for p in new), f"written outside the store: {new}"


def test_absurd_resolution_is_refused_before_decoding(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as out:  # one 8200x8200 frame (> 8192^2 pixels)
        s = out.add_stream("libx264", rate=1)
        s.width, s.height, s.pix_fmt = 8200, 8200, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for p in s.encode(av.VideoFrame(8200, 8200, "yuv420p")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    _, letters, _ = through_front(cfg, [str(path)])
    assert [(dl.error_class, "8200x8200" in dl.error_message) for dl in letters] == [("AbsurdVideo", True)]


CODECS = [("av1", "libsvtav1", "mp4", "yuv420p"), ("vp9", "libvpx-vp9", "webm", "yuv420p"),
          ("prores", "prores_ks", "mov", "yuv422p10le")]


@pytest.mark.parametrize("name, encoder, container, pix_fmt", CODECS, ids=[c[0] for c in CODECS])
def test_unusual_codecs_are_split_and_transcoded(cfg: Config, tmp_path: Path, name: str, encoder: str,
                                                 container: str, pix_fmt: str) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"this PyAV/FFmpeg build has no {encoder} encoder to make a {name} test file")
    path = make_video(tmp_path / f"{name}.{container}", 320, 192, seconds=4.0, codec=encoder, pix_fmt=pix_fmt)
    videos, letters, results = through_front(cfg, [str(path)])
    assert letters == [] and len(videos) == 1, letters
    assert videos[0].codec in {"av1": {"av1", "libdav1d", "libaom-av1"}, "vp9": {"vp9", "libvpx-vp9"},
                               "prores": {"prores"}}[name], videos[0].codec
    assert assert_clips_are_sound(name, results[name]) == 1


def test_hostile_file_names_stay_inside_the_store(cfg: Config, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    hostile = d / 'it\'s a "walk"\nwith ..%2F newline & ; $(rm -rf).mp4'
    make_video(hostile, 320, 180, seconds=4.0)
    not_utf8 = os.fsencode(str(d)) + b"/caf\xe9-\xff.mp4"
    with open(not_utf8, "wb") as fh:
        fh.write(hostile.read_bytes())
    before = files_under(tmp_path)
    videos, letters, results = through_front(cfg, [str(d)])
    assert [dl.error_class for dl in letters] == ["UnreadableVideo"] and "UTF-8" in letters[0].error_message
    [v] = videos
    assert v.video_id.startswith("it-s-a-walk") and "/" not in v.video_id and "\n" not in v.video_id, v.video_id
    assert "..%2F" in v.title  # a local file name's percent sign is literal, not a URL escape
    assert assert_clips_are_sound(v.title, results[v.title]) == 1
    new = files_under(tmp_path) - before
    assert new and all(cfg.artifacts_dir in p.parents for p in new), f"written outside the store: {new}"


def test_hostile_titles_from_a_site_stay_inside_the_store(cfg: Config, tmp_path: Path) -> None:
    crawl_cfg(cfg)
    title = 'x"/../../../etc/passwd\n<script>\\evil\u202e.mp4'
    f = make_video(tmp_path / "v.mp4", 1280, 720, 1.5)
    before = files_under(tmp_path)
    with MediaSite([Item("..%2F..%2Fevil", title, f, 1280, 720, 1.5)]) as site:
        out = Collect()
        stats = CrawlProducer(cfg, [site.page_url("..%2F..%2Fevil")], queries=[],
                              seen=SeenIndex(cfg, use_warehouse=False)).run(out)  # type: ignore[arg-type]
    assert stats.videos == 1, stats
    [rec] = out.records
    assert rec.title == title and Path(rec.uri).read_bytes() == f.read_bytes()
    new = files_under(tmp_path) - before
    assert new and all(cfg.artifacts_dir.resolve() in p.resolve().parents for p in new), new
