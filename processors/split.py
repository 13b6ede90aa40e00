"""Stage ``split``: videos -> clips, by fixed windows (the simple splitter).

Cuts each video into consecutive windows of ``split.window_s`` seconds. A remainder
shorter than ``split.min_clip_s`` joins the previous window when the result stays
within ``split.max_clip_s``, else it is dropped. A video shorter than the minimum
yields no clip and a dead letter saying so. (The scene-cut splitter of SPEC.md §1
replaces this; the clip contract stays the same.)
"""

from __future__ import annotations

from typing import Sequence

from spatialvid.runtime import Result, Stage, register_stage
from spatialvid.schemas.records import ClipRecord, VideoRecord

METHOD = "fixed-window-v1"


class TooShort(ValueError):
    """The video is shorter than the shortest clip the dataset keeps."""


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


@register_stage
class SplitStage(Stage[VideoRecord]):
    """Fixed-window splitter: one clip record per window."""

    name = "split"
    input = VideoRecord
    outputs = (ClipRecord,)

    def process_batch(self, items: Sequence[VideoRecord]) -> list[Result]:
        return [self.split(v) for v in items]

    def split(self, v: VideoRecord) -> Result:
        c = self.cfg.split
        spans = fixed_windows(v.num_frames, v.fps, c.window_s, c.min_clip_s, c.max_clip_s)
        if not spans:
            return TooShort(f"video {v.video_id} lasts {v.duration_s:.2f}s, shorter than the {c.min_clip_s:g}s minimum clip")
        return [
            ClipRecord(
                clip_id=f"{v.video_id}_{i}", video_id=v.video_id, index=i, num_clips=len(spans), uri=v.uri,
                frame_start=a, frame_end=b, timestamp_start=a / v.fps, timestamp_end=b / v.fps,
                fps=v.fps, width=v.width, height=v.height, method=METHOD,
            )
            for i, (a, b) in enumerate(spans)
        ]
