"""Scoring-stage throughput with the model backends, as a ratio to decode-only throughput.

Same clips, same decoder settings, same run:

* "decode": a pool of ``--workers`` threads iterates every frame of each clip (plus the
  frame of context each side that motion uses) and does nothing with it; with
  ``--processes`` also pools of worker processes, at ``--workers``, ``--stage-workers``
  and every ``--baseline-workers`` count: the fastest of all is the baseline;
* "score": the score stage's ``process_batch`` over micro-batches of ``--batch`` clips:
  decoding, motion, luminance, the aesthetic model and the OCR detector, one row per clip.

Reported: clips per second of both, their ratio (target on the GPU machine: >= 0.8; with
``--processes`` also the median ratio of paired passes, robust to the hosts' drift),
where the stage's time goes, the model-only throughput, and the largest difference
between scores computed with model batches of 1 and of 32 (batch independence).

``--backend laion`` builds the real ViT-L/14 + LAION MLP architecture with random
weights (the official files cannot be downloaded here; speed does not depend on the
values) and saves them in the official formats first. ``--backend offline`` uses the
BRISQUE proxy. Both use the rapidocr detector unless ``--no-ocr``.

    python bench/bench_models.py --backend offline --clips 8 --workers 2      # this CPU machine
    python bench/bench_models.py --backend laion --clips 48 --seconds 4 --workers 16 --batch 48 --ocr-threads 4 \
        --processes   # GPU machine (16 cores); without --processes: decode threads

On a GPU host, ``bench/device_score.sh WHEELS_DIR`` installs the wheels it lacks (PyAV,
rapidocr and its needs, pydantic, ...), runs the scorers' CUDA tests and this bench with
the figures of docs/benchmarks.md. ``--work DIR`` keeps the clips and random weights
between variants; ``--repeat N`` takes the best of N passes of each; ``--profile`` prints
one clip's work on one core; ``--ocr-check`` compares the OCR ratios with onnxruntime's on
frames with rendered text; ``--post-processes N`` sets the OCR post-processing workers.
The stage's decode workers are also timed alone (no model): the stage's ceiling. With
``--processes``, N more passes alternate decode-only and the stage (the hosts drift within
a run) and print each pair's ratio and their median.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spatialvid.config import Config
from spatialvid.processors.frames import iter_frames
from spatialvid.processors.score import ScoreStage, decoder_threads
from spatialvid.producers.samples import SampleSpec, write_sample
from spatialvid.schemas.records import ClipRecord


def make_clips(folder: Path, n: int, seconds: float, w: int, h: int, fps: float = 24.0) -> list[ClipRecord]:
    """A few rendered videos, cut into ``n`` clips (distinct frame ranges)."""
    videos = []
    for k, (speed, light) in enumerate([(3.0, 0.8), (12.0, 0.8), (1.0, 0.5), (6.0, 0.9)]):
        spec = SampleSpec(f"v{k}", seconds * 4, speed, light, "")
        target = folder / f"v{k}_{h}p_{seconds:g}s.mp4"
        videos.append(target if target.exists() else write_sample(target, spec, width=w, height=h, seed=k))
    per = int(seconds * fps)
    clips = []
    for i in range(n):
        path = videos[i % len(videos)]
        start = ((i // len(videos)) % 3) * per
        clips.append(ClipRecord(clip_id=f"{path.stem}_{i}", video_id=path.stem, index=i, num_clips=n, uri=str(path),
                                frame_start=start, frame_end=start + per, timestamp_start=start / fps,
                                timestamp_end=(start + per) / fps, fps=fps, width=w, height=h, method="bench"))
    return clips


def decode_clip(clip: ClipRecord, threads: int = 0) -> int:
    """Decode-only: iterate the clip's frames (and motion's context frame each side)."""
    return sum(1 for _ in iter_frames(clip.uri, max(0, clip.frame_start - 1), clip.frame_end + 1, threads=threads))


def write_random_laion(folder: Path) -> None:
    """The real ViT-L/14 tower and LAION MLP with random weights, in the official formats."""
    import torch

    from spatialvid.processors.scorers.aesthetic import CLIP_FILE, MLP_FILE, AestheticMLP, VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer()  # ViT-L/14 defaults
    torch.save({f"visual.{k}": v.half() for k, v in vit.state_dict().items()}, folder / CLIP_FILE)
    torch.save(AestheticMLP(768).state_dict(), folder / MLP_FILE)


class _Timed:
    """A wrapper that adds its wall time to ``acc[key]`` (a class, so that a scorer whose
    bound ``prepare`` travels to decode worker processes still pickles)."""

    def __init__(self, fn: Callable[..., Any], acc: dict[str, float], key: str) -> None:
        self.fn, self.acc, self.key = fn, acc, key

    def __call__(self, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.acc[self.key] = self.acc.get(self.key, 0.0) + time.perf_counter() - t


def timed(obj: Any, attr: str, acc: dict[str, float], key: str) -> None:
    """Wrap ``obj.attr`` so that its wall time adds up in ``acc[key]``."""
    setattr(obj, attr, _Timed(getattr(obj, attr), acc, key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("laion", "offline"), default="offline")
    ap.add_argument("--no-ocr", action="store_true")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--workers", type=int, default=2, help="decode workers (scoring.decode_workers)")
    ap.add_argument("--stage-workers", type=int, default=0,
                    help="decode workers of the score stage (default: --workers); its model thread and OCR "
                         "post-processing need cores too")
    ap.add_argument("--baseline-workers", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    help="more decode-only worker-process counts to try, comma-separated; the fastest is the baseline")
    ap.add_argument("--decode-threads", type=int, default=None,
                    help="FFmpeg threads per decoder (scoring.decode_threads), stage and baseline")
    ap.add_argument("--batch", type=int, default=8, help="clips per micro-batch (runtime.batch_size)")
    ap.add_argument("--ocr-threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--processes", action="store_true",
                    help="decode in worker processes (scoring.decode_processes), baseline measured both ways")
    ap.add_argument("--cpu-motion", action="store_true", help="motion on the decode workers' CPUs, as before")
    ap.add_argument("--worker-inputs", action="store_true",
                    help="the models' inputs (CLIP crop, detector resize) made in the decode workers, as before, "
                         "not on the GPU from the uploaded frames")
    ap.add_argument("--work", default="", help="folder kept between runs (clips, random weights); default: a temp dir")
    ap.add_argument("--ocr-check", action="store_true",
                    help="OCR ratios of this backend vs rapidocr on onnxruntime (CPU) on frames with rendered text")
    ap.add_argument("--profile", action="store_true", help="one clip's work on one core, step by step")
    ap.add_argument("--repeat", type=int, default=1,
                    help="decode-only and score passes each run this many times; the best of each is the result")
    ap.add_argument("--post-processes", type=int, default=None,
                    help="OCR DB post-processing worker processes on CUDA (default: --ocr-threads); "
                         "0: threads of the main process, as before")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval for this run (0: Python's default 5 ms); probes GIL contention")
    args = ap.parse_args()
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    w, h = map(int, args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        if args.work:
            tmp = args.work
            Path(tmp).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        clips = make_clips(Path(tmp), args.clips, args.seconds, w, h)
        print(f"{len(clips)} clips of {args.seconds:g}s at {w}x{h} rendered in {time.perf_counter() - t0:.1f}s; "
              f"{os.cpu_count()} CPU cores")
        cfg = Config()
        sc = cfg.scoring
        sc.decode_workers, sc.ocr_threads, sc.device, sc.weights_dir = (args.stage_workers or args.workers,
                                                                        args.ocr_threads, args.device, tmp)
        sc.ocr_backend = "none" if args.no_ocr else sc.ocr_backend
        sc.decode_processes = args.processes
        if args.decode_threads is not None:
            sc.decode_threads = args.decode_threads
        if args.backend == "laion":
            t0 = time.perf_counter()
            from spatialvid.processors.scorers.aesthetic import CLIP_FILE

            if not (Path(tmp) / CLIP_FILE).exists():
                write_random_laion(Path(tmp))
            sc.aesthetic_backend = "laion-aesthetic-vit-l14"
            print(f"random ViT-L/14 + MLP written in the official formats in {time.perf_counter() - t0:.1f}s")
        else:
            sc.aesthetic_backend = "brisque-proxy"
        stage = ScoreStage(cfg)
        if args.cpu_motion:
            stage.gpu_motion = False
        if args.worker_inputs:
            stage.device_inputs = False
        t0 = time.perf_counter()
        stage.setup()
        print(f"stage set up in {time.perf_counter() - t0:.1f}s: {stage.model_id} {stage.model_version} "
              f"(aesthetic on {getattr(stage.aesthetic, 'device', '-')}, OCR on {getattr(stage.ocr, 'device', '-')}, "
              f"motion on {'GPU' if stage._motion_factory else 'CPU'}, model inputs made "
              f"{'on the device' if stage._device_inputs else 'in the decode workers'}; CUDA graphs: aesthetic "
              f"{getattr(stage.aesthetic, 'graphs', '-')}, OCR {getattr(stage.ocr, 'graphs', '-')})")
        if args.post_processes is not None and hasattr(stage.ocr, "post_processes"):
            stage.ocr.close()
            stage.ocr.post_processes = args.post_processes
            stage.ocr.warmup(stage.ocr.prepare(np.zeros((sc.sample_height, sc.sample_width, 3), np.uint8)))
        if stage.ocr is not None:
            n_post = getattr(stage.ocr, "post_processes", 0)
            print(f"OCR post-processing: {f'{n_post} worker processes' if n_post else 'threads of the main process'}")
        if args.profile:
            profile(stage, clips[1])

        # warm-up: first CUDA kernels, onnxruntime's first run, page cache of the files
        stage.process_batch(clips[: min(2, len(clips))])

        decode = partial(decode_clip, threads=decoder_threads(sc))  # the stage's decoder settings
        reps = max(1, args.repeat)
        with ThreadPoolExecutor(args.workers) as pool:
            runs = []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                frames = sum(pool.map(decode, clips))
                runs.append((time.perf_counter() - t0, time.process_time() - c0))
            decode_s, decode_cpu = min(runs)
        if args.processes:  # the same decode-only work in worker processes: the fairer baseline here
            # at every worker count the stage is run with (and any asked for): the best is the baseline
            counts = sorted({args.workers, sc.decode_workers, *args.baseline_workers})
            print(f"decode-only in threads ({args.workers}): {decode_s:.2f}s, {len(clips) / decode_s:.2f} clips/s")
            best_count, best_p = 0, float("inf")
            for count in counts:
                with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn")) as ppool:
                    list(ppool.map(decode, clips[:count]))  # start the workers
                    pruns = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        assert sum(ppool.map(decode, clips)) == frames
                        pruns.append(time.perf_counter() - t0)
                print(f"decode-only in {count} processes: {min(pruns):.2f}s, {len(clips) / min(pruns):.2f} clips/s "
                      f"(each pass: {', '.join(f'{len(clips) / t:.1f}' for t in pruns)} clips/s)")
                decode_s = min(decode_s, min(pruns))
                if min(pruns) < best_p:
                    best_count, best_p = count, min(pruns)
            print("the baseline below is the fastest decode-only of these")

        acc: dict[str, float] = {}
        timed(stage, "prepare", acc, "decode+motion+prepare (pool threads, summed)")  # not seen in processes
        for name, scorer in (("aesthetic", stage.aesthetic), ("ocr", stage.ocr)):
            if scorer is not None:  # what the model thread calls (launch / score_async: networks only)
                attr = next(a for a in ("launch", "score_async", "score") if hasattr(scorer, a))
                timed(scorer, attr, acc, f"{name} model calls (model thread, {attr})")
        if stage.ocr is not None and hasattr(stage.ocr, "_detect"):
            timed(stage.ocr, "_detect", acc, "  of which OCR network, gate, map transfer")
            stage.ocr.gated = [0, 0]
        if hasattr(stage.ocr, "post_stats"):
            stage.ocr.post_stats = [0, 0.0]
        timed(stage, "_inputs_on_device", acc, "model inputs (model thread; device: upload, resizes)")
        timed(stage, "launch", acc, "model thread busy in all")
        passes = []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = []
            for i in range(0, len(clips), args.batch):
                rows += stage.process_batch(clips[i:i + args.batch])
            passes.append((time.perf_counter() - t0, time.process_time() - c0))
            bad = [r for r in rows if isinstance(r, BaseException)]
            assert not bad, bad[:2]
        score_s, score_cpu = min(passes)
        print(f"score stage, each pass: {', '.join(f'{len(clips) / t:.1f}' for t, _ in passes)} clips/s")
        wonly = []  # the stage's decode workers alone: the ceiling without any model
        for _ in range(reps):
            t0 = time.perf_counter()
            for i in range(0, len(clips), args.batch):
                [f.result() for f in [stage._submit(c) for c in clips[i:i + args.batch]]]
            wonly.append(time.perf_counter() - t0)
        print(f"the stage's decode workers alone (decode, motion, sampling, model-input preparation, no model): "
              f"{', '.join(f'{len(clips) / t:.1f}' for t in wonly)} clips/s, best "
              f"{decode_s / min(wonly):.2f} of decode-only")
        if args.processes:  # the hosts drift within a run: decode-only and the stage, pass for pass
            paired = []
            with ProcessPoolExecutor(best_count, mp_context=multiprocessing.get_context("spawn")) as ppool:
                list(ppool.map(decode, clips[:best_count]))
                for _ in range(reps):
                    t0 = time.perf_counter()
                    list(ppool.map(decode, clips))
                    t1 = time.perf_counter()
                    for i in range(0, len(clips), args.batch):
                        stage.process_batch(clips[i:i + args.batch])
                    paired.append((t1 - t0) / (time.perf_counter() - t1))
            print(f"paired passes (decode-only in {best_count} processes, then the stage): ratios "
                  f"{', '.join(f'{r:.2f}' for r in paired)}, median {float(np.median(paired)):.2f}")
        n_passes = 2 * reps if args.processes else reps  # stage passes the timers saw
        acc = {k: v / n_passes for k, v in acc.items()}

        d_rate, s_rate = len(clips) / decode_s, len(clips) / score_s
        ratio = s_rate / d_rate
        print(f"decode-only: {decode_s:.2f}s, {d_rate:.2f} clips/s ({frames / decode_s:.0f} frames/s)")
        print(f"score stage: {score_s:.2f}s, {s_rate:.2f} clips/s")
        cores = os.cpu_count() or 1
        print(f"CPU time: decode-only {decode_cpu:.1f}s ({decode_cpu / decode_s / cores:.0%} of {cores} cores), "
              f"score stage {score_cpu:.1f}s ({score_cpu / score_s / cores:.0%}); "
              f"{1e3 * decode_cpu / len(clips):.0f} vs {1e3 * score_cpu / len(clips):.0f} CPU-ms per clip")
        print(f"ratio score/decode throughput, best pass of each: {ratio:.2f} (target >= 0.8: "
              f"{'met' if ratio >= 0.8 else 'NOT met'})")
        if args.processes:  # the drift-robust figure: each stage pass against the decode-only pass just before it
            med = float(np.median(paired))
            print(f"ratio, median of the paired passes: {med:.2f} (target >= 0.8: {'met' if med >= 0.8 else 'NOT met'})")
        print(f"where the stage's time goes (per pass of {len(clips)} clips, mean of {n_passes}):")
        for k, v in acc.items():
            print(f"  {k:<48} {v:8.2f}s")
        if getattr(stage.ocr, "gated", None):
            print(f"  OCR frames without a possible box (no transfer, no post-processing): "
                  f"{stage.ocr.gated[0]} of {stage.ocr.gated[1]}")
        if getattr(stage.ocr, "post_stats", None) and stage.ocr.post_stats[0]:
            n_post, t_post = stage.ocr.post_stats
            print(f"  OCR DB post-processing off the model thread: {n_post / n_passes:.0f} frames, {t_post / n_passes:.2f}s "
                  f"summed over its workers per pass ({1e3 * t_post / n_post:.1f} ms/frame)")
        print(f"RESULT decode-only {d_rate:.2f} clips/s, score {s_rate:.2f} clips/s, ratio {ratio:.3f}"
              + (f", paired median {float(np.median(paired)):.3f}" if args.processes else ""))

        # model-only throughput and batch independence, on the sampled frames of the clips
        prepared = [stage.prepare(c) for c in clips[: min(len(clips), 11)]]
        for name, scorer in (("aesthetic", stage.aesthetic), ("ocr", stage.ocr)):
            if scorer is None:
                continue
            inputs = [scorer.prepare(f) for p in prepared for f in p.measures.sampled_rgb]
            t0 = time.perf_counter()
            batched = scorer.score(inputs)
            dt = time.perf_counter() - t0
            if hasattr(scorer, "batch_size"):
                scorer.batch_size = 1
            single = np.array([scorer.score([x])[0] for x in inputs])
            if hasattr(scorer, "batch_size"):
                scorer.batch_size = sc.model_batch
            print(f"{name}: {len(inputs) / dt:.1f} frames/s in one call of {len(inputs)} frames; "
                  f"max |batch of {len(inputs)} - batch of 1| = {np.abs(batched - single).max():.2e}")
        if args.ocr_check and stage.ocr is not None:
            ocr_check(stage, prepared)
        stage.teardown()


def profile(stage: ScoreStage, clip: ClipRecord) -> None:
    """One clip's work on one core (decoder single-threaded), best of 3, in ms."""
    from spatialvid.processors.frames import luma
    from spatialvid.processors.score import _preparer, measure_clip, prepare_clip
    from spatialvid.processors.scorers.motion import VmafMotion

    def best(fn: Callable[[], Any]) -> float:
        out = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return 1e3 * min(out)

    dec = best(lambda: decode_clip(clip, threads=1))

    def with_motion(factory: Callable[[], Any]) -> None:
        m = factory()
        for _, f in iter_frames(clip.uri, max(0, clip.frame_start - 1), clip.frame_end + 1, threads=1):
            m.push(luma(f))
        m.per_frame()

    cpu_m = best(lambda: with_motion(VmafMotion))
    line = f"profile, one clip on one core: decode {dec:.0f} ms; decode + CPU motion {cpu_m:.0f} ms"
    if stage._motion_factory is not None:
        line += f"; decode + GPU motion {best(lambda: with_motion(stage._motion_factory)):.0f} ms"
    m = measure_clip(clip, threads=1, motion_factory=stage._motion_factory)
    line += f"; measure_clip (+ sampled frames, luminance) {best(lambda: measure_clip(clip, 640, 360, 1, stage._motion_factory)):.0f} ms"
    for name, s in (("aesthetic", stage.aesthetic), ("ocr", stage.ocr)):
        if s is not None:
            line += f"; {name} prepare x3 {best(lambda: [s.prepare(f) for f in m.sampled_rgb]):.1f} ms"
    preparers = stage._preparers or (_preparer(stage.aesthetic), _preparer(stage.ocr))
    task = partial(prepare_clip, clip, 640, 360, 1, *preparers, stage._motion_factory, stage._device_inputs)
    p = task()
    line += (f"; whole worker task {best(task):.0f} ms"
             f"; its result {len(pickle.dumps(p)) / 1e6:.1f} MB, pickled and back {best(lambda: pickle.loads(pickle.dumps(p))):.1f} ms")
    print(line)


def ocr_check(stage: ScoreStage, prepared: list[Any]) -> None:
    """The stage's OCR ratios against rapidocr on onnxruntime (CPU) on frames with rendered text."""
    import cv2

    from spatialvid.models import get_model

    ref = get_model(stage.cfg.scoring.ocr_backend, stage.cfg.scoring.weights_dir, device="cpu", threads=4)
    frames = []
    for k, p in enumerate(prepared):
        for rgb in p.measures.sampled_rgb[:1]:
            img = rgb.copy()
            lines, scale = 1 + k % 5, 0.8 + 0.3 * (k % 4)
            y = 10
            for j in range(lines):
                (w, h), base = cv2.getTextSize("BREAKING NEWS 24", cv2.FONT_HERSHEY_DUPLEX, scale, 2)
                y += h + base + 8
                if y >= img.shape[0] - 5:
                    break
                cv2.rectangle(img, (10, y - h - base), (14 + w, y + base), (20, 20, 20), -1)
                cv2.putText(img, "BREAKING NEWS 24", (12, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 2,
                            cv2.LINE_AA)
            frames += [img, rgb]
    a = ref.score([ref.prepare(f) for f in frames])
    b = stage.ocr.score([stage.ocr.prepare(f) for f in frames])
    one = np.array([stage.ocr.score([stage.ocr.prepare(f)])[0] for f in frames])
    print(f"OCR check on {len(frames)} frames ({int((a > 0.01).sum())} with text, ratios up to {a.max():.3f}): "
          f"max |{stage.ocr.version} - onnxruntime| = {np.abs(a - b).max():.2e}, verdicts equal: "
          f"{bool(((a > 0.3) == (b > 0.3)).all())}; batch of {len(frames)} vs 1: {np.abs(b - one).max():.2e}")


if __name__ == "__main__":
    main()
