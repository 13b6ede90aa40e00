"""Stage ``split``: videos -> clips (SPEC.md §1).

Topic ``videos`` (:class:`VideoRecord`) in, topic ``clips`` (:class:`ClipRecord`) out.

``split.method = "scenes"`` (the default): one streaming, downscaled decode finds the shot
boundaries (content + adaptive detectors with frame skip 2, min scene length 15 frames, and
the interval-based comparison that catches fades and dissolves: ``processors/scenes.py``);
every scene loses 0.3 s at each end, scenes of 3-15 s become clips, longer ones are chopped
into 15 s pieces (a remainder is kept from 3 s on).

``split.method = "fixed"``: consecutive windows of ``split.window_s`` seconds. A remainder
shorter than ``split.min_clip_s`` joins the previous window when the result stays within
``split.max_clip_s``, else it is dropped.

Clip ids are ``{video_id}_{index}``, deterministic for a given video and configuration, so a
redelivered video yields the same clips. A video with no clip (too short, or only short
scenes) becomes a dead letter saying so; a video the crawl pre-filter rejected
(``accepted = false``) yields nothing at all. With ``split.materialize`` every clip is also
cut and re-encoded into ``<artifacts>/clips/<video_id>/<clip_id>.mp4`` (``processors/
transcode.py``) and its record carries ``clip_uri``, codec and size.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spatialvid.config import Config
from spatialvid.runtime import Resources, Result, Stage, register_stage
from spatialvid.schemas.records import ClipRecord, VideoRecord

from .scenes import VERSION as SCENES_VERSION
from .scenes import SceneConfig, detect_scenes, plan_clips

METHOD = "fixed-window-v1"
METHODS = ("scenes", "fixed")


class TooShort(ValueError):
    """The video is shorter than the shortest clip the dataset keeps."""


class NoClips(ValueError):
    """The video has no scene that lasts a whole clip after trimming."""


def fixed_windows(num_frames: int, fps: float, window_s: float, min_s: float, max_s: float) -> list[tuple[int, int]]:
    """End-exclusive frame ranges of the windows of a video."""
    win = max(1, int(round(window_s * fps)))
    lo, hi = int(round(min_s * fps)), int(round(max_s * fps))
    spans = [(s, min(s + win, num_frames)) for s in range(0, num_frames, win)]
    if spans and spans[-1][1] - spans[-1][0] < lo:
        short = spans.pop()
        if spans and short[1] - spans[-1][0] <= hi:
            spans[-1] = (spans[-1][0], short[1])
    return spans


def scene_config(cfg: Config) -> SceneConfig:
    """The scene detector's settings from ``[split]`` (everything else: the paper's defaults)."""
    c = cfg.split
    return dataclasses.replace(
        SceneConfig(), content_threshold=c.content_threshold, adaptive_threshold=c.adaptive_threshold,
        min_scene_len=c.min_scene_len, frame_skip=c.frame_skip, trim_s=c.trim_s,
        min_clip_s=c.min_clip_s, max_clip_s=c.max_clip_s,
    )


@register_stage
class SplitStage(Stage[VideoRecord]):
    """Scene-cut (or fixed-window) splitter: one clip record per planned clip."""

    name = "split"
    input = VideoRecord
    outputs = (ClipRecord,)
    resources = Resources(cpus=2.0)  # the decoder's threads

    def setup(self) -> None:
        if self.cfg.split.method not in METHODS:
            raise ValueError(f"split.method {self.cfg.split.method!r} is not one of {', '.join(METHODS)}")
        self.scenes = scene_config(self.cfg)
        if self.cfg.split.materialize:
            from .transcode import pick_encoder

            # Fail at start, not per clip, when no encoder works; logs which one is used.
            pick_encoder(self.cfg.transcode.codec, self.cfg.transcode.encoder)

    def process_batch(self, items: Sequence[VideoRecord]) -> list[Result]:
        if not hasattr(self, "scenes"):  # used as a library without setup()
            self.setup()
        out: list[Result] = []
        for v in items:
            try:
                out.append(self.split(v))
            except Exception as exc:  # this video's failure is its own dead letter
                out.append(exc)
        return out

    def split(self, v: VideoRecord) -> Result:
        """The clip records of one video (or the error that explains why there are none)."""
        if not v.accepted:
            return []  # rejected by the crawl pre-filter: recorded there, nothing to split
        c = self.cfg.split
        if c.method == "fixed":
            spans = fixed_windows(v.num_frames, v.fps, c.window_s, c.min_clip_s, c.max_clip_s)
            if not spans:
                return TooShort(f"video {v.video_id} lasts {v.duration_s:.2f}s, shorter than the "
                                f"{c.min_clip_s:g}s minimum clip")
            fps, width, height, method = v.fps, v.width, v.height, METHOD
        else:
            scenes = detect_scenes(v.uri, self.scenes)
            fps, width, height = scenes.fps, scenes.width, scenes.height
            spans = [(s.frame_start, s.frame_end) for s in plan_clips(scenes, fps, self.scenes)]
            method = SCENES_VERSION
            if not spans:
                longest = max((s.num_frames for s in scenes), default=0) / fps
                return NoClips(f"video {v.video_id}: {len(scenes)} scene(s), the longest {longest:.2f}s; none "
                               f"lasts {c.min_clip_s:g}s after trimming {c.trim_s:g}s from each end")
        clips = [
            ClipRecord(
                clip_id=f"{v.video_id}_{i}", video_id=v.video_id, index=i, num_clips=len(spans), uri=v.uri,
                frame_start=a, frame_end=b, timestamp_start=a / fps, timestamp_end=b / fps,
                fps=fps, width=width, height=height, method=method,
            )
            for i, (a, b) in enumerate(spans)
        ]
        return [self.materialize(clip) for clip in clips] if c.materialize else clips

    def materialize(self, clip: ClipRecord) -> ClipRecord:
        """Cut and re-encode one clip into the artifact store; the record gains its file."""
        from .transcode import safe_clip_path, transcode_clip

        dest = safe_clip_path(self.cfg.artifacts_dir, clip.video_id, clip.clip_id)
        out = transcode_clip(clip.uri, clip.frame_start, clip.frame_end, dest, self.cfg.transcode)
        return clip.model_copy(update=dict(clip_uri=str(out.path), clip_codec=out.codec,
                                           clip_width=out.width, clip_height=out.height))
