"""Stage ``annotate``: scores (passed) -> one annotation per clip (SPEC.md §3; issue 6).

Input: topic ``scores``, :class:`ScoreRecord`; only records with ``passed`` are
annotated (the rest are consumed without output). The score record carries where the
clip's frames are (``uri`` + ``[frame_start, frame_end)``, or ``clip_uri``).
Output: topic ``annotations``, :class:`AnnotationRecord`, one per passed clip, also
for a clip that could not be annotated (``success=false`` with ``failure_reason``).

Per clip: decode the frames sampled at about ``annotate.sample_fps`` (every
``int(fps / sample_fps)`` frames), run the geometry backend (``annotate.backend``),
then from its poses the trajectory metrics and motion instructions
(``processors/geometry/metrics.py``, ``instructions.py``), the dynamic masks and
dynamicRatio (``masks.py``), and write the release-layout artifacts through
``sinks/release.py`` under ``<data_dir>/artifacts`` (``annotations/group_XXXX/{id}/``
and ``depths/group_XXXX/{id}.zip`` when there is depth: from ``annotate.depth_model`` when
configured, median-aligned to the backend's sparse depths (``depth.py``), else the
backend's own, else with ``annotate.dense_depth`` plane-sweep stereo on the backend's poses
(``mvs.py``); the record's ``depth_model`` / ``depth_alignment`` say which). A clip whose video
cannot be read, or a score record without a uri, becomes a dead letter.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from spatialvid.config import AnnotateConfig, Config
from spatialvid.producers.probe import VideoError
from spatialvid.runtime import Resources, Result, Stage, register_stage
from spatialvid.schemas.records import AnnotationRecord, ScoreRecord
from spatialvid.sinks.release import ClipAnnotations, release_paths, write_clip_annotations

from ..frames import iter_frames, to_rgb
from .backends.base import GeometryBackend, GeometryResult, get_backend, sample_step
from .backends.colmap import ColmapOptions
from .instructions import instruction_summary, motion_instructions
from .masks import MaskConfig, PersonSegmenter, Sam2Refiner, dynamic_masks
from .metrics import dynamic_ratio, trajectory_metrics
from .poses import normalize_intrinsics

log = logging.getLogger(__name__)


def make_backend(cfg: AnnotateConfig) -> GeometryBackend:
    """The configured geometry backend, with its options from ``[annotate]``."""
    cls = get_backend(cfg.backend)
    if cfg.backend == "megasam":
        return cls(command=cfg.megasam_command)  # type: ignore[call-arg]
    opts = ColmapOptions(camera_model=cfg.camera_model, max_features=cfg.max_features, overlap=cfg.match_overlap,
                         num_threads=cfg.threads, device=cfg.device, min_registered_share=cfg.min_registered_share,
                         max_gap=cfg.max_gap, min_baseline=cfg.min_baseline, min_features=cfg.min_features,
                         self_calibrate=cfg.self_calibrate)
    try:
        return cls(opts)  # type: ignore[call-arg]
    except TypeError:
        return cls()


def mask_config(cfg: AnnotateConfig) -> MaskConfig:
    return MaskConfig(threshold=cfg.mask_threshold, empty_margin=cfg.mask_empty_margin, max_area=cfg.mask_max_area,
                      prompts=cfg.mask_prompts, sigma_px=cfg.mask_flow_sigma_px)


def sample_clip(score: ScoreRecord, cfg: AnnotateConfig) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Decode the sampled frames of the clip: RGB ``(N, H, W, 3)`` (longest side at most
    ``max_side``) and their frame numbers in the clip's video (the source when the clip
    is a frame range of it)."""
    if score.clip_uri:
        uri, start, end = score.clip_uri, 0, score.frame_end - score.frame_start
    elif score.uri:
        uri, start, end = score.uri, score.frame_start, score.frame_end
    else:
        raise ValueError(f"score record of clip {score.clip_id} carries no uri (scored by a score stage older "
                         "than issue 6?); re-score the clip")
    if end <= start or score.fps <= 0:
        raise ValueError(f"clip {score.clip_id}: empty frame range [{start}, {end}) or fps {score.fps}")
    step = sample_step(score.fps, cfg.sample_fps)
    wanted = list(range(start, end, step))
    if cfg.max_frames and len(wanted) > cfg.max_frames:  # keep the span, thin the sample
        wanted = list(range(start, end, step * -(-len(wanted) // cfg.max_frames)))
    want = set(wanted)
    frames, idx = [], []
    for i, frame in iter_frames(uri, start, end):
        if i in want:
            img = to_rgb(frame, frame.width, frame.height)
            h, w = img.shape[:2]
            s = cfg.max_side / max(h, w)
            if s < 1.0:
                img = cv2.resize(img, (int(round(w * s)) // 2 * 2, int(round(h * s)) // 2 * 2), interpolation=cv2.INTER_AREA)
            frames.append(img)
            idx.append(i if not score.clip_uri else i + score.frame_start)
    if not frames:
        raise ValueError(f"clip {score.clip_id}: no frame decoded in [{start}, {end}) of {uri}")
    return np.stack(frames), np.asarray(idx, dtype=np.int64)


def main_trends(steps: dict[str, int], top: int = 3, share: float = 0.25) -> list[str]:
    """The clip's main motion trends: moving commands covering at least ``share`` of the
    moving steps, most frequent first, at most ``top``; ``["Stay"]`` if nothing moves."""
    moving = {k: v for k, v in steps.items() if k != "Stay" and v > 0}
    if not moving:
        return ["Stay"]
    total = sum(moving.values())
    ranked = sorted(moving.items(), key=lambda kv: (-kv[1], kv[0]))
    return [k for k, v in ranked if v >= share * total][:top]


def release_group(clip_id: str, groups: int) -> int:
    """Deterministic release group of a clip (``group_XXXX``), spread by a hash of its id."""
    return zlib.crc32(clip_id.encode("utf-8", "surrogateescape")) % max(1, groups)


@register_stage
class AnnotateStage(Stage[ScoreRecord]):
    """Camera poses, intrinsics, depth (when the backend has it) and dynamic masks per passed clip."""

    name = "annotate"
    input = ScoreRecord
    outputs = (AnnotationRecord,)
    resources = Resources(cpus=2.0)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.backend: GeometryBackend | None = None
        self.depth: Any = None  # a depth.DepthEstimator when annotate.depth_model is set
        self.dense_depth = False  # plane-sweep stereo (mvs.py) when annotate.dense_depth and torch is there
        self.refiner: Any = None
        self.person: Any = None

    def setup(self) -> None:
        a = self.cfg.annotate
        self.backend = make_backend(a)
        self.backend.setup()
        if a.depth_model:  # torch is imported only when a depth model is configured
            from .depth import load_depth_estimator

            self.depth = load_depth_estimator(a.depth_model, a.depth_checkpoint, self.cfg.scoring.weights_dir or None,
                                              device=a.device)
        if a.dense_depth and not a.depth_model:
            import importlib.util

            self.dense_depth = importlib.util.find_spec("torch") is not None
            if not self.dense_depth:
                log.warning("annotate.dense_depth needs torch (pip install torch); clips get no dense depth")
        if a.sam2_checkpoint:
            from spatialvid.models import resolve_device

            self.refiner = Sam2Refiner(a.sam2_checkpoint, a.sam2_config,
                                       device=resolve_device(a.device, "annotate.device"))
        if a.person_fallback and self.refiner is None:
            self.person = PersonSegmenter()
        log.info("annotate: backend %s (%s), scale: %s", self.backend.name, self.backend.version(),
                 self.backend.scale_convention)

    def teardown(self) -> None:
        if self.person is not None:
            self.person.close()

    def process_batch(self, items: Sequence[ScoreRecord]) -> list[Result]:
        out: list[Result] = []
        for score in items:
            if not score.passed:
                out.append([])
                continue
            try:
                out.append([self.annotate(score)])
            except (VideoError, ValueError, OSError) as exc:  # bad input: a dead letter, not a retry
                out.append(exc)
        return out

    def annotate(self, score: ScoreRecord) -> AnnotationRecord:
        """Annotate one clip: artifacts written, the record returned."""
        assert self.backend is not None, "setup() first"
        a = self.cfg.annotate
        frames, idx = sample_clip(score, a)
        res = self.backend.estimate(frames, idx)
        kept = frames[np.isin(idx, res.frame_indexes)]  # the frames the backend registered
        if res.success and res.depth is None and self.depth is None and self.dense_depth:
            self._dense_depth(kept, res)
        base = dict(clip_id=score.clip_id, video_id=score.video_id, model_id=res.backend, model_version=res.version,
                    registered_share=res.registered_share, num_sampled=res.num_sampled,
                    scale_convention=res.scale_convention)
        if not res.success:
            return AnnotationRecord(success=False, failure_reason=res.reason, **base)
        return AnnotationRecord(success=True, **base, **self._artifacts(score, kept, res))

    def _dense_depth(self, kept: NDArray[np.uint8], res: GeometryResult) -> None:
        """Fill ``res.depth`` by plane-sweep stereo on the backend's poses (``mvs.py``) from the
        registered frames ``kept``; a clip without a valid pixel (no baseline, no sparse
        points) keeps no depth."""
        from .mvs import MvsOptions, plane_sweep_depth

        a = self.cfg.annotate
        mvs = plane_sweep_depth(kept, res.poses, res.intrinsics, res.extras.get("sparse_depth"),
                                MvsOptions(max_side=a.dense_depth_side, device=a.device,
                                           threads=max(0, a.threads)))
        res.extras.update(dense_depth_s=mvs.seconds, dense_depth_valid_share=float(mvs.valid_share.mean()))
        if mvs.any_valid:
            res.depth = mvs.depth
            res.extras["dense_depth_method"] = mvs.version
        log.info("annotate: dense depth of %d frames in %.1f s (%s), valid share %.2f", len(kept), mvs.seconds,
                 mvs.device, float(mvs.valid_share.mean()))

    def _artifacts(self, score: ScoreRecord, kept: NDArray[np.uint8], res: GeometryResult) -> dict[str, Any]:
        a = self.cfg.annotate
        metrics = trajectory_metrics(res.poses)
        instructions = motion_instructions(res.poses, move_dist=metrics.move_dist)
        steps = instruction_summary(instructions)
        masks = None
        ratio = None
        if a.masks:
            masks, _ = dynamic_masks(kept, res.poses, res.intrinsics, mask_config(a), self.refiner, self.person,
                                     res.motion_prob)
            ratio = dynamic_ratio(masks)
        depth, depth_model, depth_alignment = res.depth, "", ""
        if self.depth is not None:
            from .depth import clip_depth

            aligned = clip_depth(self.depth, kept, res)
            depth, depth_model, depth_alignment = aligned.depth, self.depth.version, aligned.alignment
        elif depth is not None and res.extras.get("dense_depth_method"):
            depth_model = res.extras["dense_depth_method"]
            depth_alignment = f"plane-sweep stereo on {res.backend}'s poses ({res.scale_convention}); invalid pixels 0"
        elif depth is not None:
            depth_model, depth_alignment = res.version, f"{res.backend}'s own depth ({res.scale_convention})"
        disparity = None
        if depth is not None:
            with np.errstate(divide="ignore"):
                disparity = np.where(depth > 0, 1.0 / depth, 0.0).astype(np.float32)
        paths = release_paths(self.cfg.artifacts_dir, score.clip_id, release_group(score.clip_id, a.release_groups))
        ann = ClipAnnotations(poses=res.poses, intrinsics=normalize_intrinsics(res.intrinsics),
                              frame_indexes=res.frame_indexes, dyn_masks=masks, disparity=disparity,
                              instructions=instructions)
        write_clip_annotations(paths.annotation_dir, ann, depth_zip=paths.depth_zip if disparity is not None else None)
        return dict(num_poses=len(res.poses), move_dist=metrics.move_dist, dist_level=metrics.dist_level,
                    rot_angle=metrics.rot_angle, traj_turns=metrics.traj_turns, anomaly=metrics.anomaly,
                    dynamic_ratio=ratio, motion_trends=main_trends(steps), instruction_steps=steps,
                    artifacts_uri=str(paths.annotation_dir), depth_model=depth_model, depth_alignment=depth_alignment)
