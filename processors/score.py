"""Stage ``score``: clips -> one score row per clip with all four filters (SPEC.md §2).

Each clip is decoded once: every frame's luma plane feeds the VMAF motion score, and
the three sampled frames (0, 1/3, 2/3 of the clip, resized to 640x360) feed
luminance, the aesthetic model and the OCR text detector. The scorers themselves are
in ``processors/scorers``; the model backends come from the registry
(``spatialvid.models``) and are loaded once in :meth:`ScoreStage.setup`, so missing or
corrupt weights stop the worker at start-up with what to do.

Batching and overlap: the clips of a micro-batch are decoded on a thread pool
(``scoring.decode_workers``), or in worker processes with ``scoring.decode_processes``
(no GIL contention between decoders; bench/bench_models.py measured 1.8x on 16 cores);
on the CPU each worker also prepares the model inputs (CLIP's resize/crop, BRISQUE's
features, the detector's resize). On CUDA the OCR detector runs on torch
(``scorers/ocr.py``) and the GPU models pad their batches to a few fixed shapes, captured
as CUDA graphs in :meth:`ScoreStage.setup`; the workers send the sampled uint8 frames
back as they are, and the models' resizes (PIL's bicubic for CLIP, OpenCV's bilinear
for the detector; the same bytes, ``scorers/resample.py``) and normalisation run on the
GPU; motion's blur and SAD run there too (``TorchVmafMotion``: the decode workers only
copy each luma plane into a pinned buffer).
Whenever clips finish decoding and no model call is in flight, one model thread runs the
models on the frames of every clip that became ready, in batches of up to
``scoring.model_batch`` frames, while the pool goes on decoding the others. On CUDA the
model thread only launches the networks: the OCR detector's DB post-processing (contours,
box scores, unclip; rapidocr's Python) runs in the detector's own worker processes, and a
call's rows are written when its ratios come back, while the next call's networks run.
A frame's score does not depend on which batch it is in; rows are returned in the order
of the clips.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Sequence

import av
import cv2
import numpy as np

from spatialvid.models import get_model, model_status, resolve_device
from spatialvid.producers.probe import VideoError
from spatialvid.runtime import Resources, Result, Stage, register_stage
from spatialvid.schemas.records import ClipRecord, ScoreRecord

from .frames import iter_frames, luma, sample_indices, to_rgb
from .scorers.luminance import VERSION as LUMINANCE_VERSION
from .scorers.luminance import LuminanceStats, luminance_passes, luminance_stats
from .scorers.motion import VmafMotion, motion_passes

log = logging.getLogger(__name__)

PAPER_AESTHETIC = "laion-aesthetic-vit-l14"
AESTHETIC_PROXY = "brisque-proxy"


@dataclass(frozen=True)
class ClipMeasures:
    """What one decoding pass over a clip measures."""

    num_frames: int
    sampled_rgb: list[np.ndarray]
    motion: float
    luminance: LuminanceStats  # of the sampled frames, computed by the decode worker


def measure_clip(clip: ClipRecord, width: int = 640, height: int = 360, threads: int = 0,
                 motion_factory: Callable[[], Any] | None = None) -> ClipMeasures:
    """Decode the clip once; return the motion score and the sampled RGB frames.

    Motion is scored with one frame of context on each side, as the reference does by
    scoring the whole source video: the clip's first frame is compared with the frame
    before it and its last with the one after (motion2 takes the minimum of both).
    ``motion_factory`` makes the motion scorer (default :class:`VmafMotion` on the CPU;
    the stage passes :class:`TorchVmafMotion` when the models run on CUDA).
    """
    wanted = set(sample_indices(clip.frame_start, clip.frame_end))
    motion = motion_factory() if motion_factory is not None else VmafMotion()
    in_clip: list[bool] = []
    sampled: list[np.ndarray] = []
    first = max(0, clip.frame_start - 1)
    worker: threading.Thread | None = None
    frames: queue.Queue[av.VideoFrame | None] | None = None
    if not getattr(motion, "inline", False):
        # Motion runs on its own thread, one frame behind the decoder: both release the
        # GIL, so the blur overlaps the decoding of the next frames.
        frames = queue.Queue(maxsize=16)
        q = frames

        def consume() -> None:
            while (frame := q.get()) is not None:
                motion.push(luma(frame))

        worker = threading.Thread(target=consume, name="motion", daemon=True)
        worker.start()
    try:
        for idx, frame in iter_frames(clip.uri, first, clip.frame_end + 1, threads=threads):
            if frames is not None:
                frames.put(frame)
            else:  # a memcpy into the device scorer's staging buffer
                motion.push(luma(frame))
            in_clip.append(clip.frame_start <= idx < clip.frame_end)
            if idx in wanted:
                sampled.append(to_rgb(frame, width, height))
    finally:
        if frames is not None and worker is not None:
            frames.put(None)
            worker.join()
    per_frame = motion.per_frame()[np.array(in_clip, bool)] if in_clip else np.empty(0)
    if not sampled or per_frame.size == 0:
        raise ValueError(f"clip {clip.clip_id}: no frame decoded in [{clip.frame_start}, {clip.frame_end})")
    return ClipMeasures(num_frames=int(per_frame.size), sampled_rgb=sampled, motion=float(per_frame.mean()),
                        luminance=luminance_stats(sampled))


def prepare_clip(clip: ClipRecord, width: int, height: int, threads: int,
                 aesthetic_prepare: Callable[[np.ndarray], Any] | None,
                 ocr_prepare: Callable[[np.ndarray], Any] | None,
                 motion_factory: Callable[[], Any] | None = None, keep_frames: bool = True) -> "PreparedClip":
    """Decode one clip and prepare its model inputs (a decode thread's or process's work).

    ``keep_frames=False`` drops the sampled RGB frames once their luminance and model
    inputs are computed (what a worker process sends back is then ~4x smaller)."""
    m = measure_clip(clip, width, height, threads, motion_factory)
    out = PreparedClip(m, [aesthetic_prepare(f) for f in m.sampled_rgb] if aesthetic_prepare else [],
                       [ocr_prepare(f) for f in m.sampled_rgb] if ocr_prepare else [])
    if not keep_frames:
        out.measures = replace(m, sampled_rgb=[])
    return out


def decoder_threads(sc: Any) -> int:
    """FFmpeg threads per decoder (``scoring.decode_threads``). 0: in worker processes, the
    cores shared out among them (one each when there is a process per core: FFmpeg's own
    threads on top cost 1.3-1.7x on 16 cores, bench_models.py); on decode threads, FFmpeg's choice."""
    if sc.decode_threads or not sc.decode_processes:
        return int(sc.decode_threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, sc.decode_workers))


def _preparer(scorer: Any) -> Callable[[np.ndarray], Any] | None:
    """A scorer's input preparation as something a worker process can receive."""
    if scorer is None:
        return None
    return scorer.preparer() if hasattr(scorer, "preparer") else scorer.prepare


def _init_decode_process(*preparers: Any, motion_factory: Callable[[], Any] | None = None) -> None:
    """Worker start: one OpenCV thread; ``preparers`` arrive unpickled, so their imports
    (torch, rapidocr) happen here rather than on a worker's first clip. A device motion
    scorer starts its CUDA context here too."""
    cv2.setNumThreads(1)
    if motion_factory is not None:
        m = motion_factory()
        for _ in range(2):
            m.push(np.zeros((8, 8), np.uint8))
        m.per_frame()


def _cuda_motion(device: str) -> Callable[[], Any] | None:
    """The device motion scorer's factory when the models run on CUDA, else ``None`` (CPU)."""
    if not device.startswith("cuda"):
        return None
    from .scorers.motion import TorchVmafMotion

    return partial(TorchVmafMotion, device)


def resolve_aesthetic_backend(name: str, weights_dir: str) -> str:
    """``auto`` -> the paper's LAION model when it is ready here, else the labelled proxy."""
    if name != "auto":
        return name
    status = model_status(PAPER_AESTHETIC, weights_dir)
    if status.ready:
        return PAPER_AESTHETIC
    log.warning("aesthetic: the paper's model %s is not ready (%s); scoring with the labelled proxy %s instead "
                "(its rows say so; set scoring.aesthetic_backend to choose)", PAPER_AESTHETIC,
                "; ".join(status.problems(weights_dir)) or "?", AESTHETIC_PROXY)
    return AESTHETIC_PROXY


def load_scorers(cfg: Any) -> tuple[Any | None, Any | None]:
    """The aesthetic and OCR backends named in ``cfg.scoring`` (``None`` for "none")."""
    sc = cfg.scoring
    options = {"device": sc.device, "half": sc.half, "batch_size": sc.model_batch, "threads": sc.ocr_threads}
    aesthetic = ocr = None
    name = resolve_aesthetic_backend(sc.aesthetic_backend, sc.weights_dir)
    if name != "none":
        aesthetic = get_model(name, sc.weights_dir, **options)
    if sc.ocr_backend != "none":
        ocr = get_model(sc.ocr_backend, sc.weights_dir, **options)
    return aesthetic, ocr


@dataclass
class PreparedClip:
    """A decoded clip: its measures and the model inputs of its sampled frames."""

    measures: ClipMeasures
    aesthetic_inputs: list[Any] = field(default_factory=list)
    ocr_inputs: list[Any] = field(default_factory=list)


@dataclass
class Launched:
    """One model call whose networks ran: its clips, their aesthetic values, and the
    future of the OCR detector's per-frame ratios (post-processed by its workers)."""

    ready: list[tuple[int, PreparedClip]]
    aesthetic: list[float]
    ocr_inputs: list[list[Any]]
    ocr: Future[Any]


@register_stage
class ScoreStage(Stage[ClipRecord]):
    """The four quality filters (aesthetic, luminance, OCR, motion), one score row per clip."""

    name = "score"
    input = ClipRecord
    outputs = (ScoreRecord,)
    resources = Resources(cpus=2.0, gpu_memory_gb=2.0)
    #: motion on the GPU: None = whenever scoring.device resolves to CUDA; False = CPU always
    gpu_motion: bool | None = None
    #: the models' inputs made on their device from the uploaded frames (``prepare_device``):
    #: None = whenever every model runs on CUDA; True = whenever every model can; False = never
    device_inputs: bool | None = None

    def setup(self) -> None:
        self.aesthetic, self.ocr = load_scorers(self.cfg)
        sc = self.cfg.scoring
        # Motion on the GPU when the models are there: the decode workers then only copy
        # each frame's luma into a pinned buffer (gpu_motion = False keeps it on the CPU).
        self._motion_factory = _cuda_motion(resolve_device(sc.device)) if self.gpu_motion is not False else None
        motion_version = VmafMotion.version
        if self._motion_factory is not None:
            from .scorers.motion import TorchVmafMotion

            motion_version = TorchVmafMotion.version
        parts = [(s.model_id, s.version) for s in (self.aesthetic,) if s is not None]
        parts.append(("luminance", LUMINANCE_VERSION))
        parts += [(s.model_id, s.version) for s in (self.ocr,) if s is not None]
        parts.append(("vmaf-motion", motion_version))
        self.model_id = "+".join(p[0] for p in parts)
        self.model_version = "+".join(p[1] for p in parts)
        # On CUDA the workers send the sampled frames back as they are, and the models'
        # input resizes run on the GPU (the same bytes, scorers/resample.py): less CPU per
        # clip, one upload per model call.
        models = [s for s in (self.aesthetic, self.ocr) if s is not None]
        able = bool(models) and all(hasattr(s, "prepare_device") for s in models)
        wanted = (all(str(s.device).startswith("cuda") for s in models) if self.device_inputs is None
                  else self.device_inputs)
        self._device_inputs = able and wanted
        self._upload: dict[str, Any] = {}  # the pinned staging buffer of the frames
        # The decoder threads already use the cores; OpenCV's own pool only adds contention.
        cv2.setNumThreads(1)
        # Decoding releases the GIL: several clips in flight keep the cores busy. With
        # many decoders the per-frame Python (motion, queues) contends for the GIL; worker
        # processes avoid that (spawned: the parent may hold a CUDA context). They get the
        # scorers' input preparation as small picklable functions, never the models.
        self._preparers: tuple[Any, Any] | None = None
        self._pool: Executor
        if sc.decode_processes:
            self._preparers = ((None, None) if self._device_inputs
                               else (_preparer(self.aesthetic), _preparer(self.ocr)))
            self._pool = ProcessPoolExecutor(max_workers=max(1, sc.decode_workers),
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=partial(_init_decode_process,
                                                                 motion_factory=self._motion_factory),
                                             initargs=self._preparers)
            # start every worker now (spawn, imports, CUDA context), not while the first clips wait
            wait([self._pool.submit(os.getpid) for _ in range(max(1, sc.decode_workers))])
        else:
            self._pool = ThreadPoolExecutor(max_workers=max(1, sc.decode_workers), thread_name_prefix="score")
        # Plan the GPU models' batch shapes now (a no-op on CPU), not on the first clips.
        blank = np.zeros((sc.sample_height, sc.sample_width, 3), np.uint8)
        for scorer in (self.aesthetic, self.ocr):
            if scorer is not None and hasattr(scorer, "warmup"):
                scorer.warmup(scorer.prepare(blank))
        # One model thread: GPU calls (and the detector's post-processing) overlap decoding.
        self._models = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-models")

    def teardown(self) -> None:
        self._pool.shutdown()
        self._models.shutdown()
        for scorer in (self.aesthetic, self.ocr):
            if scorer is not None and hasattr(scorer, "close"):
                scorer.close()

    def prepare(self, clip: ClipRecord) -> PreparedClip:
        """Decode one clip and prepare its model inputs (runs on a pool thread)."""
        sc = self.cfg.scoring
        here = not getattr(self, "_device_inputs", False)
        return prepare_clip(clip, sc.sample_width, sc.sample_height, decoder_threads(sc),
                            self.aesthetic.prepare if self.aesthetic and here else None,
                            self.ocr.prepare if self.ocr and here else None, getattr(self, "_motion_factory", None))

    def _submit(self, clip: ClipRecord) -> Future[PreparedClip]:
        if self._preparers is None:
            return self._pool.submit(self.prepare, clip)
        sc = self.cfg.scoring
        return self._pool.submit(prepare_clip, clip, sc.sample_width, sc.sample_height, decoder_threads(sc),
                                 *self._preparers, self._motion_factory, self._device_inputs)

    def process_batch(self, items: Sequence[ClipRecord]) -> list[Result]:
        futures: dict[Future[PreparedClip], int] = {self._submit(c): i for i, c in enumerate(items)}
        results: list[Result | None] = [None] * len(items)
        pending: list[tuple[int, PreparedClip]] = []  # decoded, waiting for the models
        running: Future[Launched] | None = None  # the model call in flight
        finishing: dict[Future[Any], Launched] = {}  # model calls whose OCR post-processing runs elsewhere
        try:
            while futures or pending or running is not None or finishing:
                waiting = set(futures) | set(finishing) | ({running} if running is not None else set())
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut is running:  # the networks ran: rows once the OCR ratios are in
                        launched = fut.result()
                        finishing[launched.ocr] = launched
                        running = None
                        continue
                    if fut in finishing:  # a model call's rows
                        launched = finishing.pop(fut)
                        for (i, _), rec in zip(launched.ready, self.finish(items, launched)):
                            results[i] = [rec]
                        continue
                    i = futures.pop(fut)
                    try:
                        pending.append((i, fut.result()))
                    except (VideoError, ValueError, OSError) as exc:  # bad input: a dead letter, not a retry
                        results[i] = exc
                # Pipelined: the models run on their own thread, on every clip that became
                # ready since the last call, while the pool goes on decoding the others; the
                # OCR detector's post-processing of one call overlaps the next call.
                if running is None and pending:
                    running = self._models.submit(self.launch, items, pending)
                    pending = []
        finally:
            for fut in futures:
                fut.cancel()
            if running is not None:  # never leave a model call running past the batch
                wait([running])
            if finishing:
                wait(list(finishing))
        return results  # type: ignore[return-value]  (every slot is filled once the loop ends)

    @staticmethod
    def _reduce(scorer: Any, inputs: list[list[Any]], values: np.ndarray) -> list[float]:
        """One value per clip from the values of its frames (max or mean)."""
        out, k = [], 0
        for per_clip in inputs:
            v = values[k:k + len(per_clip)]
            k += len(per_clip)
            out.append(float(v.max() if scorer.reduce == "max" else v.mean()))
        return out

    def launch(self, items: Sequence[ClipRecord], ready: list[tuple[int, PreparedClip]]) -> "Launched":
        """The model thread's work: the networks on the ready clips' frames.

        The ViT is enqueued first and read back last, so the detector's input staging
        overlaps it on the GPU; the detector's DB post-processing is handed to its
        workers (a future of the ratios), so the next call need not wait for it.
        """
        if self._device_inputs:
            self._inputs_on_device(ready)
        a_inputs = [p.aesthetic_inputs for _, p in ready]
        o_inputs = [p.ocr_inputs for _, p in ready]
        collect: Callable[[], np.ndarray] | None = None
        aesthetic = [float("nan")] * len(ready)
        if self.aesthetic is not None:
            flat = [x for per_clip in a_inputs for x in per_clip]
            if hasattr(self.aesthetic, "launch"):
                collect = self.aesthetic.launch(flat)
            else:
                aesthetic = self._reduce(self.aesthetic, a_inputs, self.aesthetic.score(flat))
        ocr: Future[Any] = Future()
        if self.ocr is None:
            ocr.set_result(None)
        elif hasattr(self.ocr, "score_async"):
            ocr = self.ocr.score_async([x for per_clip in o_inputs for x in per_clip])
        else:
            ocr.set_result(self.ocr.score([x for per_clip in o_inputs for x in per_clip]))
        if collect is not None:
            aesthetic = self._reduce(self.aesthetic, a_inputs, collect())
        return Launched(list(ready), aesthetic, o_inputs, ocr)

    def _inputs_on_device(self, ready: list[tuple[int, PreparedClip]]) -> None:
        """Fill each clip's model inputs from its sampled frames: uploaded in one transfer,
        resized on the models' device (the bytes the workers would have made)."""
        from .scorers.resample import upload

        frames = upload([f for _, p in ready for f in p.measures.sampled_rgb], (self.aesthetic or self.ocr).device,
                        self._upload)
        crops = self.aesthetic.prepare_device(frames) if self.aesthetic is not None else None
        detector = self.ocr.prepare_device(frames) if self.ocr is not None else None
        k = 0
        for _, p in ready:
            n = len(p.measures.sampled_rgb)
            if crops is not None:
                p.aesthetic_inputs = crops[k:k + n]
            if detector is not None:
                p.ocr_inputs = detector[k:k + n]
            k += n

    def finish(self, items: Sequence[ClipRecord], launched: "Launched") -> list[ScoreRecord]:
        """The rows of one model call (its OCR ratios are in)."""
        values = launched.ocr.result()
        ocr = ([float("nan")] * len(launched.ready) if self.ocr is None
               else self._reduce(self.ocr, launched.ocr_inputs, values))
        return [self.record(items[i], p.measures, a, o)
                for (i, p), a, o in zip(launched.ready, launched.aesthetic, ocr)]

    def score_prepared(self, items: Sequence[ClipRecord], ready: list[tuple[int, PreparedClip]]) -> list[ScoreRecord]:
        return self.finish(items, self.launch(items, ready))

    def score(self, clip: ClipRecord) -> ScoreRecord:
        """Score one clip (no batching; the benchmark's and the tests' entry point)."""
        return self.score_prepared([clip], [(0, self.prepare(clip))])[0]

    def record(self, clip: ClipRecord, m: ClipMeasures, aesthetic: float, ocr: float) -> ScoreRecord:
        f = self.cfg.filters
        lum = m.luminance
        lum_ok, lum_why = luminance_passes(lum.mean, f.luminance_min, f.luminance_max)
        mot_ok, mot_why = motion_passes(m.motion, f.motion_min, f.motion_max)
        fields: dict[str, Any] = {}
        verdicts: list[tuple[bool, str]] = []  # in filter order: aesthetic, luminance, OCR, motion
        if self.aesthetic is not None:
            ok, why = self.aesthetic.verdict(aesthetic, f)
            # A proxy's value never lands in the column of the paper's score.
            fields.update({"aesthetic_proxy" if self.aesthetic.is_proxy else "aesthetic": aesthetic,
                           "aesthetic_model": self.aesthetic.model_id, "aesthetic_pass": ok})
            verdicts.append((ok, why))
        verdicts.append((lum_ok, lum_why))
        if self.ocr is not None:
            ok, why = self.ocr.verdict(ocr, f)
            fields.update({"ocr_ratio": ocr, "ocr_model": self.ocr.model_id, "ocr_pass": ok})
            verdicts.append((ok, why))
        verdicts.append((mot_ok, mot_why))
        return ScoreRecord(
            clip_id=clip.clip_id, video_id=clip.video_id, model_id=self.model_id, model_version=self.model_version,
            duration_s=clip.duration_s, num_frames=m.num_frames,
            luminance_mean=lum.mean, luminance_min=lum.min, luminance_max=lum.max, luminance_pass=lum_ok,
            motion=m.motion, motion_pass=mot_ok, **fields, uri=clip.uri, clip_uri=clip.clip_uri,
            frame_start=clip.frame_start, frame_end=clip.frame_end, fps=clip.fps,
            passed=all(ok for ok, _ in verdicts), reject_reasons=[why for _, why in verdicts if why],
        )
