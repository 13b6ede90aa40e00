"""Stage ``score``: clips -> one score row per clip (SPEC.md §2).

Each clip is decoded once: every frame's luma plane feeds the VMAF motion score, and
the three sampled frames (0, 1/3, 2/3 of the clip, resized to 640x360) feed
luminance. The scorers themselves are pure functions in ``processors/scorers``.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import av
import cv2
import numpy as np

from spatialvid.producers.probe import VideoError
from spatialvid.runtime import Resources, Result, Stage, register_stage
from spatialvid.schemas.records import ClipRecord, ScoreRecord

from .frames import iter_frames, luma, sample_indices
from .scorers.luminance import VERSION as LUMINANCE_VERSION
from .scorers.luminance import luminance_passes, luminance_stats
from .scorers.motion import VmafMotion, motion_passes


@dataclass(frozen=True)
class ClipMeasures:
    """What one decoding pass over a clip measures."""

    num_frames: int
    sampled_rgb: list[np.ndarray]
    motion: float


def measure_clip(clip: ClipRecord, width: int = 640, height: int = 360, threads: int = 0) -> ClipMeasures:
    """Decode the clip once; return the motion score and the sampled RGB frames.

    Motion is scored with one frame of context on each side, as the reference does by
    scoring the whole source video: the clip's first frame is compared with the frame
    before it and its last with the one after (motion2 takes the minimum of both).
    """
    wanted = set(sample_indices(clip.frame_start, clip.frame_end))
    motion = VmafMotion()
    in_clip: list[bool] = []
    sampled: list[np.ndarray] = []
    first = max(0, clip.frame_start - 1)
    # Motion runs on its own thread, one frame behind the decoder: both release the
    # GIL, so the blur overlaps the decoding of the next frames.
    frames: queue.Queue[av.VideoFrame | None] = queue.Queue(maxsize=16)

    def consume() -> None:
        while (frame := frames.get()) is not None:
            motion.push(luma(frame))

    worker = threading.Thread(target=consume, name="motion", daemon=True)
    worker.start()
    try:
        for idx, frame in iter_frames(clip.uri, first, clip.frame_end + 1, threads=threads):
            frames.put(frame)
            in_clip.append(clip.frame_start <= idx < clip.frame_end)
            if idx in wanted:
                sampled.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
    finally:
        frames.put(None)
        worker.join()
    per_frame = motion.per_frame()[np.array(in_clip, bool)] if in_clip else np.empty(0)
    if not sampled or per_frame.size == 0:
        raise ValueError(f"clip {clip.clip_id}: no frame decoded in [{clip.frame_start}, {clip.frame_end})")
    return ClipMeasures(num_frames=int(per_frame.size), sampled_rgb=sampled, motion=float(per_frame.mean()))


@register_stage
class ScoreStage(Stage[ClipRecord]):
    """Luminance and motion filters, one score row per clip."""

    name = "score"
    input = ClipRecord
    outputs = (ScoreRecord,)
    resources = Resources(cpus=2.0)

    model_id = "luminance+vmaf-motion"

    def setup(self) -> None:
        self.model_version = f"{LUMINANCE_VERSION}+{VmafMotion.version}"
        # The decoder threads already use the cores; OpenCV's own pool only adds contention.
        cv2.setNumThreads(1)
        # Decoding releases the GIL: two clips in flight keep both cores busy.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")

    def teardown(self) -> None:
        self._pool.shutdown()

    def process_batch(self, items: Sequence[ClipRecord]) -> list[Result]:
        return list(self._pool.map(self._score_or_error, items))

    def _score_or_error(self, clip: ClipRecord) -> Result:
        try:
            return [self.score(clip)]
        except (VideoError, ValueError, OSError) as exc:  # bad input: a dead letter, not a retry
            return exc

    def score(self, clip: ClipRecord) -> ScoreRecord:
        sc, f = self.cfg.scoring, self.cfg.filters
        m = measure_clip(clip, sc.sample_width, sc.sample_height, sc.decode_threads)
        lum = luminance_stats(m.sampled_rgb)
        lum_ok, lum_why = luminance_passes(lum.mean, f.luminance_min, f.luminance_max)
        mot_ok, mot_why = motion_passes(m.motion, f.motion_min, f.motion_max)
        return ScoreRecord(
            clip_id=clip.clip_id, video_id=clip.video_id, model_id=self.model_id, model_version=self.model_version,
            duration_s=clip.duration_s, num_frames=m.num_frames,
            luminance_mean=lum.mean, luminance_min=lum.min, luminance_max=lum.max, luminance_pass=lum_ok,
            motion=m.motion, motion_pass=mot_ok,
            passed=lum_ok and mot_ok, reject_reasons=[r for r in (lum_why, mot_why) if r],
        )
