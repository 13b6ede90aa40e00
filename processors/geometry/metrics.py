"""Trajectory metrics of SpatialVID (SPEC.md §3): anomaly, moveDist, distLevel,
rotAngle, trajTurns, and dynamicRatio from the dynamic masks.

Input is the released pose layout: w2c rows ``[tx, ty, tz, qx, qy, qz, qw]`` (see
``poses.py`` for the conventions). Everything is vectorised NumPy over a batch of
trajectories of equal length; the one-trajectory entry point is a batch of one.

Faithful to the reference (``utils/evaluation.py`` of SpatialVID), with these fixes:

* Positions are camera centres ``c = -R.T t`` (SPEC.md §3 fix). The reference read
  ``p`` from the w2c translation ``t``, which moves whenever the camera rotates, so a
  camera panning in place got a non-zero moveDist and turns. ``positions="translation"``
  reproduces the reference for comparisons only.
* rotAngle uses the geodesic angle ``2 atan2(|v|, |w|)`` of ``q[i+1] q[i]^-1``. It equals
  the reference's ``2 acos(w)`` when consecutive quaternions lie in one hemisphere (the
  normal case), is accurate for small angles, and does not add ``2 pi - angle`` when a
  pose estimator flips the sign of a quaternion between frames (q and -q are the same
  rotation).
* trajTurns rounds the smoothed angles to 1e-9 rad before finding peaks: on a circular
  arc the angle is constant and the reference counted floating-point ripple (1e-15) as
  turns (a quarter circle gave 7). It compares the maximum with the peaks by value, as
  the reference meant to (its ``if angles:`` on a NumPy array raises for more than one
  angle).

Scale: thresholds (0.03 for anomaly, the distLevel bounds) assume the reference
backend's scale (depth median-aligned to UniDepth metric depth, so roughly metres).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .poses import camera_centers, quat_angle, quat_normalize

__all__ = [
    "MetricsConfig",
    "TrajectoryMetrics",
    "TrajectoryMetricsBatch",
    "trajectory_metrics",
    "trajectory_metrics_batch",
    "trajectory_positions",
    "anomaly",
    "move_distance",
    "dist_level",
    "rotation_angle",
    "turn_angles",
    "trajectory_turns",
    "dynamic_ratio",
]

PositionSource = Literal["centers", "translation"]
TURN_DECIMALS = 9  # smoothed turn angles are compared at 1e-9 rad: below is rounding noise


@dataclass(frozen=True)
class MetricsConfig:
    """Thresholds of the trajectory metrics; defaults are the reference's (SPEC.md §3)."""

    anomaly_error: float = 0.03  # prediction error that counts as a bad step
    anomaly_consecutive: int = 2  # this many bad steps in a row = anomaly
    anomaly_min_poses: int = 4  # fewer poses than this = anomaly (cannot be checked)
    dist_levels: tuple[float, ...] = (0.08, 0.28, 0.92, 2.41)  # distLevel = how many reached
    turn_sigma: float = 5.0  # Gaussian smoothing of the turn-angle sequence (samples)
    turn_height: float = 0.45  # minimum peak height (radians)
    turn_distance: int = 5  # minimum distance between peaks (samples)
    dynamic_frame_step: int = 5  # dynamicRatio averages every 5th mask


@dataclass(frozen=True)
class TrajectoryMetrics:
    """The trajectory metrics of one clip (snake_case names of the paper's moveDist etc.).

    ``move_dist`` is in the pose backend's units, ``rot_angle`` in radians.
    """

    anomaly: bool
    move_dist: float
    dist_level: int
    rot_angle: float
    traj_turns: int

    def as_dict(self) -> dict[str, Any]:
        """snake_case dict (warehouse column names)."""
        return asdict(self)

    def as_release_dict(self) -> dict[str, Any]:
        """The released metadata-CSV column names: anomaly, moveDist, distLevel, rotAngle, trajTurns."""
        return {
            "anomaly": self.anomaly,
            "moveDist": self.move_dist,
            "distLevel": self.dist_level,
            "rotAngle": self.rot_angle,
            "trajTurns": self.traj_turns,
        }


@dataclass(frozen=True)
class TrajectoryMetricsBatch:
    """Metrics of many trajectories as arrays of shape ``(B,)``."""

    anomaly: NDArray[np.bool_]
    move_dist: NDArray[np.float64]
    dist_level: NDArray[np.int64]
    rot_angle: NDArray[np.float64]
    traj_turns: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.move_dist.shape[0])

    def __getitem__(self, i: int) -> TrajectoryMetrics:
        return TrajectoryMetrics(
            anomaly=bool(self.anomaly[i]),
            move_dist=float(self.move_dist[i]),
            dist_level=int(self.dist_level[i]),
            rot_angle=float(self.rot_angle[i]),
            traj_turns=int(self.traj_turns[i]),
        )

    def to_list(self) -> list[TrajectoryMetrics]:
        return [self[i] for i in range(len(self))]


# --------------------------------------------------------------------------- components
def trajectory_positions(poses_w2c: ArrayLike, positions: PositionSource = "centers") -> NDArray[np.float64]:
    """Positions ``[..., T, 3]`` from w2c pose rows ``[..., T, 7]``: camera centres (default)
    or, to reproduce the reference's defect, the raw w2c translations."""
    poses = np.asarray(poses_w2c, dtype=np.float64)
    if positions == "centers":
        return camera_centers(poses)
    if positions == "translation":
        return poses[..., :3].copy()
    raise ValueError(f"positions must be 'centers' or 'translation', not {positions!r}")


def anomaly(
    positions: ArrayLike,
    error: float = 0.03,
    consecutive: int = 2,
    min_poses: int = 4,
) -> NDArray[np.bool_]:
    """Constant-acceleration check on positions ``[..., T, 3]``; returns bools ``[...]``.

    Predict ``p[t+3] = p[t+2] + v1 + 0.5 (v1 - v2)`` with ``v1 = p[t+2] - p[t+1]``,
    ``v2 = p[t+1] - p[t]``; an error above ``error`` on ``consecutive`` steps in a row,
    or fewer than ``min_poses`` poses, is an anomaly (a tracking failure: real cameras
    do not jump).
    """
    p = np.asarray(positions, dtype=np.float64)
    T = p.shape[-2]
    lead = p.shape[:-2]
    if T < min_poses or T < 4:
        return np.ones(lead, dtype=bool)
    v1 = p[..., 2:-1, :] - p[..., 1:-2, :]
    v2 = p[..., 1:-2, :] - p[..., :-3, :]
    pred = p[..., 2:-1, :] + v1 + 0.5 * (v1 - v2)
    bad = np.linalg.norm(pred - p[..., 3:, :], axis=-1) > error  # [..., T-3]
    k = max(int(consecutive), 1)
    if k == 1:
        return bad.any(axis=-1)
    if bad.shape[-1] < k:
        return np.zeros(lead, dtype=bool)
    run = bad[..., : bad.shape[-1] - k + 1].copy()
    for j in range(1, k):  # k is 2 by default: one AND, not a loop over frames
        run &= bad[..., j : bad.shape[-1] - k + 1 + j]
    return run.any(axis=-1)


def move_distance(positions: ArrayLike) -> NDArray[np.float64]:
    """moveDist: path length ``sum |p[i+1] - p[i]|`` of positions ``[..., T, 3]``."""
    p = np.asarray(positions, dtype=np.float64)
    if p.shape[-2] < 2:
        return np.zeros(p.shape[:-2])
    return np.linalg.norm(np.diff(p, axis=-2), axis=-1).sum(axis=-1)


def dist_level(move_dist: ArrayLike, levels: Sequence[float] = (0.08, 0.28, 0.92, 2.41)) -> NDArray[np.int64]:
    """distLevel: how many of the (ascending) ``levels`` the moveDist reaches (``>=``), 0..4."""
    return np.searchsorted(np.asarray(levels, dtype=np.float64), np.asarray(move_dist), side="right").astype(np.int64)


def rotation_angle(quats: ArrayLike) -> NDArray[np.float64]:
    """rotAngle in radians: sum of geodesic angles between consecutive quaternions ``[..., T, 4]``
    (scalar-last; w2c or c2w give the same angle)."""
    q = quat_normalize(quats)
    if q.shape[-2] < 2:
        return np.zeros(q.shape[:-2])
    return quat_angle(q[..., :-1, :], q[..., 1:, :]).sum(axis=-1)


def turn_angles(positions: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Angles ``[..., T-2]`` between ``p[t] - p[0]`` and ``p[T-1] - p[t]`` for t = 1..T-2, and
    whether each is defined (both vectors at least 1e-8 long; the reference skips the rest)."""
    p = np.asarray(positions, dtype=np.float64)
    v1 = p[..., 1:-1, :] - p[..., :1, :]
    v2 = p[..., -1:, :] - p[..., 1:-1, :]
    n1 = np.linalg.norm(v1, axis=-1)
    n2 = np.linalg.norm(v2, axis=-1)
    valid = (n1 >= 1e-8) & (n2 >= 1e-8)
    denom = np.where(valid, n1 * n2, 1.0)
    cos = np.clip(np.einsum("...i,...i->...", v1, v2) / denom, -1.0, 1.0)
    return np.where(valid, np.arccos(cos), 0.0), valid


def _turns_one(angles: NDArray[np.float64], sigma: float, height: float, distance: int) -> int:
    """The reference procedure on one sequence of defined angles (the exact fallback)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    if angles.size == 0:
        return 0
    smooth = np.round(gaussian_filter1d(angles, sigma=sigma, mode="reflect"), TURN_DECIMALS)
    peaks, _ = find_peaks(smooth, height=height, distance=distance)
    peak_values = smooth[peaks]
    top = smooth.max()
    extra = int(top > height and not np.any(peak_values == top))
    return int(len(peaks) + extra)


def trajectory_turns(
    positions: ArrayLike,
    sigma: float = 5.0,
    height: float = 0.45,
    distance: int = 5,
) -> NDArray[np.int64]:
    """trajTurns of positions ``[..., T, 3]``; returns ints ``[...]``.

    Angle sequence from :func:`turn_angles`, Gaussian smoothing (``sigma`` samples,
    reflect at the ends), rounded to 1e-9 rad, peaks of height ``>= height`` at least ``distance`` apart,
    plus one when the maximum exceeds ``height`` and is not a peak value (a turn at an
    end of the sequence, where a peak cannot be detected).

    Vectorised: strict local maxima over the whole batch; rows where SciPy's
    ``find_peaks`` could decide differently (flat tops, peaks closer than ``distance``,
    undefined angles) are recomputed one by one with SciPy, so the result is exact.
    """
    from scipy.ndimage import gaussian_filter1d

    p = np.asarray(positions, dtype=np.float64)
    lead = p.shape[:-2]
    T = p.shape[-2]
    flat = p.reshape((-1, T, 3))
    B = flat.shape[0]
    out = np.zeros(B, dtype=np.int64)
    if T < 3 or B == 0:
        return out.reshape(lead)
    angles, valid = turn_angles(flat)
    all_valid = valid.all(axis=-1)
    x = np.round(gaussian_filter1d(angles, sigma=sigma, axis=-1, mode="reflect"), TURN_DECIMALS)
    M = x.shape[-1]
    peak = np.zeros_like(x, dtype=bool)
    if M >= 3:
        mid = x[:, 1:-1]
        peak[:, 1:-1] = (mid > x[:, :-2]) & (mid > x[:, 2:]) & (mid >= height)
    exact = all_valid & ~(x[:, 1:] == x[:, :-1]).any(axis=-1)  # flat tops need SciPy's plateau rule
    for d in range(1, min(int(distance), M)):  # peaks too close: SciPy drops the lower one
        exact &= ~(peak[:, :-d] & peak[:, d:]).any(axis=-1)
    top = x.max(axis=-1)
    extra = (top > height) & ~(peak & (x == top[:, None])).any(axis=-1)
    out[:] = peak.sum(axis=-1) + extra
    for b in np.flatnonzero(~exact):
        out[b] = _turns_one(angles[b][valid[b]], sigma, height, distance)
    return out.reshape(lead)


def dynamic_ratio(masks: Any, step: int = 5) -> float:
    """dynamicRatio: the mean of the dynamic masks over every ``step``-th frame.

    ``masks``: a boolean array ``(N, H, W)``, or a sequence of per-frame 2-D masks
    (dense arrays or SciPy sparse matrices, as read from ``dyn_masks.npz``).
    """
    if isinstance(masks, np.ndarray):
        sub = masks[::step]
        return float(np.count_nonzero(sub) / sub.size) if sub.size else 0.0
    frames = list(masks)[::step]
    if not frames:
        return 0.0
    total = 0
    pixels = 0
    for m in frames:  # one call per sampled frame, not per pixel
        if hasattr(m, "count_nonzero"):
            total += int(m.count_nonzero())
        else:
            total += int(np.count_nonzero(m))
        pixels += int(m.shape[0] * m.shape[1])
    return total / pixels if pixels else 0.0


# --------------------------------------------------------------------------- entry points
def trajectory_metrics_batch(
    poses_w2c: ArrayLike,
    config: MetricsConfig | None = None,
    *,
    positions: PositionSource = "centers",
    chunk: int = 16384,
) -> TrajectoryMetricsBatch:
    """Metrics of ``B`` trajectories of equal length: w2c pose rows ``(B, T, 7)``
    (processed ``chunk`` trajectories at a time to bound memory)."""
    cfg = config or MetricsConfig()
    poses = np.asarray(poses_w2c, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[-1] != 7:
        raise ValueError(f"expected w2c poses of shape (B, T, 7), got {poses.shape}")
    parts = []
    for lo in range(0, max(poses.shape[0], 1), chunk):
        part = poses[lo : lo + chunk]
        p = trajectory_positions(part, positions)
        dist = move_distance(p)
        parts.append(
            (
                anomaly(p, cfg.anomaly_error, cfg.anomaly_consecutive, cfg.anomaly_min_poses),
                dist,
                dist_level(dist, cfg.dist_levels),
                rotation_angle(part[..., 3:7]),
                trajectory_turns(p, cfg.turn_sigma, cfg.turn_height, cfg.turn_distance),
            )
        )
    cols = [np.concatenate(c) for c in zip(*parts)]
    return TrajectoryMetricsBatch(
        anomaly=cols[0], move_dist=cols[1], dist_level=cols[2], rot_angle=cols[3], traj_turns=cols[4]
    )


def trajectory_metrics(
    poses_w2c: ArrayLike,
    config: MetricsConfig | None = None,
    *,
    positions: PositionSource = "centers",
) -> TrajectoryMetrics:
    """Metrics of one trajectory: w2c pose rows ``(N, 7)`` ``[tx, ty, tz, qx, qy, qz, qw]``
    as in the released ``poses.npy``. dynamicRatio is separate: :func:`dynamic_ratio`."""
    poses = np.asarray(poses_w2c, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[-1] != 7:
        raise ValueError(f"expected w2c poses of shape (N, 7), got {poses.shape}")
    return trajectory_metrics_batch(poses[None], config, positions=positions)[0]
