"""Benchmark: clip materialisation throughput (issue 3).

Cuts clips out of a generated 1080p30 H.264 source (textured pans with hard cuts, the
generator of ``tests/test_scenes.py``) and re-encodes them to the uniform format (H.265 MP4,
1280x720) with every HEVC encoder that opens here: ``hevc_nvenc`` on a GPU machine whose
driver has the video library, ``libx265`` (preset ``--preset``) everywhere. Reported: frames
per second and video seconds per wall second, per encoder and as a ratio to the libx265 run
in the same process, and the decode + scale alone (no encode), the floor under any encoder.
``--jobs N`` runs N clips at once in worker processes (the split stage scales the same way:
one worker per core or per GPU session).

    .venv/bin/python bench/bench_transcode.py                 # ~1 min on 2 cores
    .venv/bin/python bench/bench_transcode.py --seconds 20 --jobs 8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import av

from spatialvid.config import TranscodeConfig
from spatialvid.processors.transcode import ENCODERS, _encoder_opens, _graph, clip_frames, transcode_clip

ROOT = Path(__file__).resolve().parents[1]


def make_source(path: Path, seconds: float, w: int, h: int, fps: int) -> None:
    spec = importlib.util.spec_from_file_location("test_scenes", ROOT / "tests" / "test_scenes.py")
    ts = importlib.util.module_from_spec(spec)
    sys.modules["test_scenes"] = ts
    try:
        spec.loader.exec_module(ts)
    except ImportError as exc:  # a machine without pytest (the GPU machine): a simpler source
        print(f"({exc}; using the panning-gradient source of tests/media_site.py)", file=sys.stderr)
        spec = importlib.util.spec_from_file_location("media_site", ROOT / "tests" / "media_site.py")
        ms = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ms)
        ms.make_video(path, w, h, seconds=seconds, fps=fps)
        return
    n = int(seconds * fps)
    shots = max(1, n // (4 * fps))
    timeline: list = []
    for i in range(shots):
        if i:
            timeline.append(ts.Transition("cut"))
        timeline.append(ts.Shot(n // shots, 100 + i, 3.0))
    ts.make_video(path, timeline, w=w, h=h, fps=fps, preset="ultrafast")


def one(args: tuple[str, int, int, str, TranscodeConfig]) -> int:
    src, a, b, dest, tc = args
    return transcode_clip(src, a, b, dest, tc).num_frames


def decode_scale(args: tuple[str, int, int, str, TranscodeConfig]) -> int:
    src, a, b, _, tc = args
    graph = None
    n = 0
    for frame in clip_frames(src, a, b):
        graph = graph or _graph(frame, tc)
        graph.push(frame)
        graph.pull()
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the source video")
    ap.add_argument("--clip-s", type=float, default=5.0, help="length of each clip")
    ap.add_argument("--jobs", type=int, default=1, help="clips encoded at once (processes)")
    ap.add_argument("--preset", default="fast", help="libx265 preset (transcode.preset)")
    ap.add_argument("--size", default="1920x1080", help="source size")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    fps = 30
    tmp = tempfile.TemporaryDirectory(prefix="bench_transcode_")
    src = Path(tmp.name) / "source.mp4"
    t0 = time.perf_counter()
    make_source(src, args.seconds, w, h, fps)
    print(f"made a {args.seconds:g} s {w}x{h}@{fps} source in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    n = int(args.seconds * fps)
    step = int(args.clip_s * fps)
    spans = [(a, min(a + step, n)) for a in range(0, n - step + 1, step)]
    tc = replace(TranscodeConfig(), preset=args.preset)
    encoders = [e for e in ENCODERS["hevc"] if _encoder_opens(e)]
    missing = [e for e in ENCODERS["hevc"] if e not in encoders]
    rows = []
    for name in ["decode+scale only", *encoders]:
        cfg = replace(tc, encoder=name if name in encoders else "auto")
        work = [(str(src), a, b, str(Path(tmp.name) / f"{name}_{i}.mp4"), cfg) for i, (a, b) in enumerate(spans)]
        fn = decode_scale if name not in encoders else one
        t0 = time.perf_counter()
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                frames = sum(pool.map(fn, work))
        else:
            frames = sum(map(fn, work))
        rows.append((name, frames, time.perf_counter() - t0))
    base = next((r for r in rows if r[0] == "libx265"), None)
    print(f"{'encoder':<20} {'frames':>7} {'wall s':>7} {'fps':>7} {'video-s/s':>9} {'vs libx265':>10}")
    for name, frames, wall in rows:
        ratio = f"{base[2] / wall:>10.2f}" if base else f"{'-':>10}"
        print(f"{name:<20} {frames:>7} {wall:>7.2f} {frames / wall:>7.1f} {frames / fps / wall:>9.2f} {ratio}")
    print(f"{len(spans)} clips of {args.clip_s:g} s from {w}x{h}@{fps} H.264 to HEVC {tc.width}x{tc.height} "
          f"(libx265 preset {args.preset}, NVENC preset p4), {args.jobs} job(s); "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; PyAV {av.__version__}")
    if missing:
        print(f"not available here (listed by the PyAV build but does not open, or absent): {', '.join(missing)}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
