"""One clip's caption record from its annotation: the three steps, or the offline default.

Which steps run is decided by the configuration (``[caption]``, SPEC.md §5):

=================  ==========================================================
endpoints          what the record holds
=================  ==========================================================
none (default)     OptCamMotion and MotionTrends from the geometry (``offline``)
llm                + OptCamMotion/MotionTrends from the LLM on the positions;
                   no scene fields (no model saw the frames)
vlm + llm          every field: CamMotion, SceneDesc, the summaries and the tags
=================  ==========================================================

The record's ``*_generated`` flags, ``caption_mode``, ``llm`` and ``model_id`` say what
ran; ``prompt_version`` is the prompt set's version; the geometry check's result is
``geometry_check_passed`` with its detail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from spatialvid.config import CaptionConfig
from spatialvid.schemas.records import AnnotationRecord, CaptionRecord

from .check import check_directions
from .client import ChatClient, Endpoint, Usage
from .offline import OFFLINE_VERSION, geometry_caption, motion_trends
from .steps import (PROMPT_VERSION, StepOptions, camera_positions, format_positions, frames_to_data_urls,
                    refine_step, sample_frames, tag_step, vision_step)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRef:
    """Where a clip's frames are (for the vision step)."""

    uri: str
    frame_start: int
    frame_end: int
    fps: float


ClipResolver = Callable[[str], ClipRef]


@dataclass
class ClipGeometry:
    """What the annotation folder holds that the captions use."""

    poses: np.ndarray | None
    instructions: dict[str, list[str]] | None


def load_geometry(ann: AnnotationRecord) -> ClipGeometry:
    """Poses and instructions from the clip's annotation folder (``artifacts_uri``);
    None for each when the record has no folder."""
    if not ann.artifacts_uri:
        return ClipGeometry(None, None)
    from spatialvid.sinks.release import read_clip_annotations

    try:
        a = read_clip_annotations(ann.artifacts_uri, masks=False)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"clip {ann.clip_id}: annotation artifacts missing at {ann.artifacts_uri} ({exc})") from None
    return ClipGeometry(np.asarray(a.poses), a.instructions)


def _endpoint(cfg: CaptionConfig, step: str) -> Endpoint | None:
    base = getattr(cfg, f"{step}_base_url")
    model = getattr(cfg, f"{step}_model")
    key_env = getattr(cfg, f"{step}_api_key_env")
    price_step = "vlm" if step == "vlm" else "llm"
    if step == "tag" and not base:
        base, model, key_env = cfg.llm_base_url, model or cfg.llm_model, key_env or cfg.llm_api_key_env
    if not base:
        return None
    if not model:
        raise ValueError(f"caption.{step}_model is empty: name the model served at {base}")
    return Endpoint(base_url=base, model=model or "", api_key_env=key_env,
                    price_in=getattr(cfg, f"{price_step}_price_in"), price_out=getattr(cfg, f"{price_step}_price_out"),
                    timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
                    max_backoff_s=cfg.max_backoff_s, concurrency=cfg.concurrency,
                    structured_output=cfg.structured_output)


class Captioner:
    """Captions clips with the configured endpoints (thread-safe: one per stage worker)."""

    def __init__(self, cfg: CaptionConfig, clip_resolver: ClipResolver | None = None, transport: Any = None) -> None:
        self.cfg = cfg
        self.clip_resolver = clip_resolver
        vlm, llm, tag = (_endpoint(cfg, s) for s in ("vlm", "llm", "tag"))
        if vlm is not None and llm is None:
            raise ValueError("caption.vlm_base_url is set but caption.llm_base_url is not: the vision step's text "
                             "is refined by the language model; configure both, or neither for the offline captions")
        self._clients: dict[str, ChatClient] = {}
        by_url: dict[tuple[str, str], ChatClient] = {}
        for step, ep in (("vlm", vlm), ("llm", llm), ("tag", tag)):
            if ep is None:
                continue
            # steps on the same server share one client, so concurrency is bounded per server
            key = (ep.base_url, ep.model)
            self._clients[step] = by_url.get(key) or ChatClient(ep, transport=transport)
            by_url[key] = self._clients[step]
        self.mode = "vlm+llm" if vlm else ("llm" if llm else "offline")
        seed = cfg.seed if cfg.seed >= 0 else None
        self._opts = {s: StepOptions(temperature=getattr(cfg, f"{s}_temperature"), max_tokens=cfg.max_tokens,
                                     seed=seed, answer_retries=cfg.answer_retries) for s in ("vlm", "llm", "tag")}
        models = [c.endpoint.model for c in self._clients.values()]
        self.model_id = "+".join(dict.fromkeys(models)) if models else "offline-geometry"
        self.model_version = OFFLINE_VERSION if self.mode == "offline" else f"{PROMPT_VERSION}|{self.mode}|{self.model_id}"

    def close(self) -> None:
        for c in set(self._clients.values()):
            c.close()

    def describe(self) -> str:
        """One line for the stage summary: what runs, and what stays empty."""
        if self.mode == "offline":
            return ("caption: no endpoint configured (caption.llm_base_url): writing the offline geometry caption "
                    "(OptCamMotion, MotionTrends from the motion instructions); scene fields stay empty, marked "
                    "not generated")
        parts = [f"{s}={c.endpoint.model}@{c.endpoint.base_url}" for s, c in self._clients.items()]
        extra = "" if self.mode == "vlm+llm" else "; no vision endpoint: scene fields stay empty"
        return f"caption: {self.mode} ({', '.join(parts)}), prompts {PROMPT_VERSION}{extra}"

    # -- one clip ----------------------------------------------------------------------
    def caption(self, ann: AnnotationRecord, geometry: ClipGeometry | None = None) -> CaptionRecord:
        """The caption record of one annotated clip (raises with the reason on failure)."""
        geo = geometry if geometry is not None else load_geometry(ann)
        num_steps = max(ann.num_poses - 1, 1)
        if self.mode == "offline":
            text = geometry_caption(ann, geo.instructions)
            check = check_directions(text, ann.instruction_steps, num_steps)
            return self._record(ann, Usage(), opt_cam_motion=text,
                                motion_trends=list(ann.motion_trends) or motion_trends(ann.instruction_steps, num_steps),
                                geometry_check_passed=check.passed, geometry_check_detail=check.detail())
        if geo.poses is None or len(geo.poses) == 0:
            raise FileNotFoundError(f"clip {ann.clip_id}: no poses (artifacts_uri={ann.artifacts_uri!r}); the "
                                    f"language-model caption needs the camera positions")
        usage = Usage()
        fields: dict[str, Any] = {}
        cam_motion = scene_desc = ""
        if "vlm" in self._clients:
            if self.clip_resolver is None:
                raise RuntimeError("the vision step needs a clip resolver (clip id -> video and frame range)")
            ref = self.clip_resolver(ann.clip_id)
            c = self.cfg
            frames = sample_frames(ref.uri, ref.frame_start, ref.frame_end, ref.fps, target_fps=c.frame_fps,
                                   width=c.frame_width, height=c.frame_height, max_frames=c.max_frames)
            vis = vision_step(self._clients["vlm"], frames_to_data_urls(frames, c.jpeg_quality), usage, self._opts["vlm"])
            cam_motion, scene_desc = vis.CamMotion, vis.SceneDesc
            fields.update(cam_motion=cam_motion, scene_desc=scene_desc, vision_generated=True)
        positions = format_positions(camera_positions(geo.poses, self.cfg.pose_stride))
        ref_result = refine_step(self._clients["llm"], cam_motion=cam_motion, scene_desc=scene_desc,
                                 positions=positions, dist_level=ann.dist_level,
                                 instruction_steps=ann.instruction_steps, instructions=geo.instructions,
                                 num_steps=num_steps, usage=usage, opts=self._opts["llm"],
                                 pose_stride=self.cfg.pose_stride, geometry_retries=self.cfg.geometry_retries)
        a = ref_result.answer
        fields.update(opt_cam_motion=a.OptCamMotion, motion_trends=a.MotionTrends, refine_generated=True,
                      geometry_check_passed=ref_result.check.passed,
                      geometry_check_detail=ref_result.check.detail(),
                      geometry_regenerations=ref_result.regenerations)
        if scene_desc:
            fields.update(scene_summary=a.SceneSummary, scene_tags=a.SceneTags,  # type: ignore[attr-defined]
                          shot_immersion=a.ShotImmersion)  # type: ignore[attr-defined]
            tags = tag_step(self._clients["tag"], scene_desc, usage, self._opts["tag"])
            cat = tags.category
            fields.update(scene_type_first=cat["sceneType"]["first"], scene_type_second=cat["sceneType"]["second"],
                          lighting=cat["lighting"], time_of_day=cat["timeOfDay"], weather=cat["weather"],
                          crowd_density=cat["crowdDensity"], tags_generated=True, tags_repaired=list(tags.repaired))
        return self._record(ann, usage, llm=self._clients["llm"].endpoint.model, **fields)

    def _record(self, ann: AnnotationRecord, usage: Usage, **fields: Any) -> CaptionRecord:
        return CaptionRecord(
            clip_id=ann.clip_id, video_id=ann.video_id, model_id=self.model_id, model_version=self.model_version,
            prompt_version=OFFLINE_VERSION if self.mode == "offline" else PROMPT_VERSION, caption_mode=self.mode,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            api_requests=usage.requests, api_retries=usage.retries, api_wait_s=round(usage.wait_s, 3),
            cost_usd=usage.cost_usd, **fields,
        )
