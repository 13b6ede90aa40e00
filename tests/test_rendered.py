"""The rendered clips' ground truth is self-consistent: what one frame shows at a pixel,
another frame shows where the true depth, poses and intrinsics say it must be."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spatialvid.processors.geometry.poses import poses7_to_w2c
from spatialvid.producers.rendered import SEQUENCES, render_sequence, write_video


def reproject(depth: np.ndarray, K0: np.ndarray, K1: np.ndarray, T0: np.ndarray, T1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of frame 0 moved into frame 1 through the true depth; returns (u, v) maps."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    X = np.stack([(u - K0[2]) / K0[0] * depth, (v - K0[3]) / K0[1] * depth, depth], -1)
    Xw = (X - T0[:, 3]) @ T0[:, :3]
    Xc = Xw @ T1[:, :3].T + T1[:, 3]
    return K1[0] * Xc[..., 0] / Xc[..., 2] + K1[2] - 0.5, K1[1] * Xc[..., 1] / Xc[..., 2] + K1[3] - 0.5


@pytest.mark.parametrize("name", ["orbit", "handheld", "zoom"])
def test_frames_agree_with_true_depth_and_poses(name: str) -> None:
    clip = render_sequence(name, 320, 180, fps=10, duration_s=3, frame_indexes=[0, 4])
    T = poses7_to_w2c(clip.poses)
    pu, pv = reproject(clip.depth[0], clip.intrinsics[0], clip.intrinsics[1], T[0], T[1])
    warped = cv2.remap(clip.frames[1], pu.astype(np.float32), pv.astype(np.float32), cv2.INTER_LINEAR)
    inside = (pu > 2) & (pu < 317) & (pv > 2) & (pv < 177)
    err = np.abs(warped.astype(float) - clip.frames[0].astype(float)).mean(-1)[inside]
    # Occlusions and resampling leave some large errors; most pixels must agree closely.
    assert inside.mean() > 0.3, f"{name}: too little overlap between frames 0 and 4"
    assert np.median(err) < 10, f"{name}: median reprojection colour error {np.median(err):.1f} grey levels"
    # ... and a wrong pose must not agree as well (the check can fail).
    T_wrong = T[1].copy()
    T_wrong[:, 3] += [0.3, 0.0, 0.0]
    pu2, pv2 = reproject(clip.depth[0], clip.intrinsics[0], clip.intrinsics[1], T[0], T_wrong)
    warped2 = cv2.remap(clip.frames[1], pu2.astype(np.float32), pv2.astype(np.float32), cv2.INTER_LINEAR)
    err2 = np.abs(warped2.astype(float) - clip.frames[0].astype(float)).mean(-1)[inside]
    assert np.median(err2) > 2 * np.median(err), f"{name}: a shifted pose fits as well as the true one"


def test_ground_truth_shapes_and_moving_object_mask(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = render_sequence("dynamic", 160, 90, fps=10, duration_s=2, frame_indexes=[0, 10, 19])
    assert clip.frames.shape == (3, 90, 160, 3) and clip.poses.shape == (3, 7) and clip.intrinsics.shape == (3, 4)
    assert clip.depth.shape == (3, 90, 160) and (clip.depth > 0).all()
    assert 0.01 < clip.masks.mean() < 0.3, "the moving cube covers part of the view"
    assert not render_sequence("pan", 160, 90, fps=10, duration_s=2, frame_indexes=[0]).masks.any()
    zoom = render_sequence("zoom", 160, 90, fps=10, duration_s=2, frame_indexes=[0, 19])
    assert zoom.intrinsics[1, 0] == pytest.approx(1.8 * zoom.intrinsics[0, 0])
    assert {"forward", "orbit", "pan", "pedestal", "handheld", "static", "zoom", "textureless"} <= set(SEQUENCES)
    path = write_video(clip.frames, tmp_path / "c.mp4", fps=10)
    import av

    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


def test_the_rendered_sample_is_a_video_of_the_requested_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import av

    from spatialvid.producers.samples import SAMPLES, write_sample

    spec = next(s for s in SAMPLES if s.rendered)
    short = type(spec)(spec.name, 1.0, spec.speed_px, spec.brightness, spec.expect, rendered=spec.rendered)
    path = write_sample(tmp_path / "room.mp4", short, width=160, height=96, fps=24)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 24 and frames[0].shape == (96, 160, 3)
    assert frames[0].std() > 10, "the room should be textured, not blank"
