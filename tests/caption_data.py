"""Annotated test clips for the caption tests: known camera paths, the real instruction
and metric code on them, and the release-layout artifacts written to a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialvid.processors.geometry.instructions import instruction_summary, motion_instructions
from spatialvid.processors.geometry.metrics import trajectory_metrics
from spatialvid.schemas.records import AnnotationRecord
from spatialvid.sinks.release import ClipAnnotations, write_clip_annotations

# camera-frame direction of travel per step (OpenCV axes: x right, y down, z forward)
MOTIONS: dict[str, tuple[float, float, float]] = {
    "left": (-1.0, 0.0, 0.0),
    "right": (1.0, 0.0, 0.0),
    "forward": (0.0, 0.0, 1.0),
    "backward": (0.0, 0.0, -1.0),
    "up": (0.0, -1.0, 0.0),
    "static": (0.0, 0.0, 0.0),
}


def trajectory(motion: str, n: int = 60, speed: float = 0.05) -> np.ndarray:
    """w2c pose rows (n, 7) of a camera that translates without rotating."""
    d = np.asarray(MOTIONS[motion])
    centers = np.arange(n)[:, None] * speed * d[None, :]
    poses = np.zeros((n, 7))
    poses[:, :3] = -centers  # R = I: t = -c
    poses[:, 6] = 1.0
    return poses


def annotated_clip(folder: Path, clip_id: str, motion: str, n: int = 60, video_id: str = "vid") -> AnnotationRecord:
    """Write the clip's artifacts under ``folder/clip_id`` and return its annotation record."""
    poses = trajectory(motion, n)
    m = trajectory_metrics(poses)
    ins = motion_instructions(poses, move_dist=m.move_dist)
    out = folder / clip_id
    write_clip_annotations(out, ClipAnnotations(poses=poses, intrinsics=np.tile([0.5, 0.9, 0.5, 0.5], (n, 1)),
                                                frame_indexes=np.arange(n), instructions=ins))
    return AnnotationRecord(
        clip_id=clip_id, video_id=video_id, model_id="test-path", model_version="1", success=True,
        registered_share=1.0, num_poses=n, move_dist=m.move_dist, dist_level=m.dist_level, rot_angle=m.rot_angle,
        traj_turns=m.traj_turns, anomaly=m.anomaly, instruction_steps=instruction_summary(ins),
        artifacts_uri=str(out),
    )
