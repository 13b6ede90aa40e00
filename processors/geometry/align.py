"""Accuracy of estimated geometry against ground truth (benchmarks and tests).

Monocular reconstructions are defined up to a similarity (rotation, translation,
scale), so camera centres are aligned to the truth with Umeyama's closed form before
the errors are measured:

* ATE: root-mean-square distance between aligned and true camera centres, also as a
  share of the true path length (sum of centre-to-centre steps);
* rotation error: geodesic angle between each aligned camera orientation and the true
  one (median and max, degrees); orientations are aligned by their own least-squares
  rotation (the centres cannot fix the roll about a straight path);
* depth: the scale-invariant log error (Eigen et al. 2014, lambda = 1, the
  "SI log RMSE"), which ignores the global scale a monocular backend cannot know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .metrics import move_distance
from .poses import camera_centers, poses7_to_c2w

__all__ = ["umeyama", "TrajectoryError", "trajectory_error", "scale_invariant_depth_error", "path_length"]


def umeyama(src: ArrayLike, dst: ArrayLike) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """Similarity ``(s, R, t)`` minimising ``sum |dst - (s R src + t)|^2`` over points ``(N, 3)``."""
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / len(x)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var = (xc**2).sum() / len(x)
    s = float(np.trace(np.diag(D) @ S) / var) if var > 0 else 1.0
    t = my - s * R @ mx
    return s, R, t


@dataclass(frozen=True)
class TrajectoryError:
    """Errors of an estimated trajectory after similarity alignment to the truth."""

    ate: float  # RMSE of centre positions, ground-truth units
    ate_pct: float  # ate / path length * 100
    rot_median_deg: float
    rot_max_deg: float
    path_length: float
    scale: float  # the similarity scale (estimate units -> truth units)
    num_frames: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def trajectory_error(est_poses: ArrayLike, gt_poses: ArrayLike) -> TrajectoryError:
    """Align the estimated w2c pose rows ``(N, 7)`` to the true ones and measure the errors."""
    est, gt = np.asarray(est_poses, dtype=np.float64), np.asarray(gt_poses, dtype=np.float64)
    if est.shape != gt.shape or est.ndim != 2 or est.shape[1] != 7:
        raise ValueError(f"pose rows must both be (N, 7); got {est.shape} and {gt.shape}")
    ce, cg = camera_centers(est), camera_centers(gt)
    s, R, t = umeyama(ce, cg)
    aligned = (s * (R @ ce.T)).T + t
    ate = float(np.sqrt(np.mean(np.sum((aligned - cg) ** 2, axis=1))))
    Re = poses7_to_c2w(est)[:, :3, :3]  # camera -> estimate world
    Rg = poses7_to_c2w(gt)[:, :3, :3]
    # The orientation alignment is its own least-squares rotation (chordal mean of
    # Rg Re^T): on a near-straight path the centres leave the roll about the path
    # direction undetermined, so the centres' rotation R would add an error that is
    # the alignment's, not the estimate's.
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", Rg, Re))
    Ro = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    rel = np.einsum("nji,jk,nkl->nil", Rg, Ro, Re)  # Rg^T Ro Re: identity when perfect
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    ang = np.degrees(np.arccos(cos))
    length = float(move_distance(cg))
    return TrajectoryError(ate=ate, ate_pct=100.0 * ate / length if length > 0 else float("inf"),
                           rot_median_deg=float(np.median(ang)), rot_max_deg=float(ang.max()),
                           path_length=length, scale=s, num_frames=len(est))


def scale_invariant_depth_error(pred: ArrayLike, gt: ArrayLike, valid: ArrayLike | None = None) -> float:
    """Scale-invariant log RMSE between depth maps (any leading shape): ``sqrt(mean(d^2) -
    mean(d)^2)`` with ``d = log(pred) - log(gt)`` over pixels where both are positive."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    ok = (p > 0) & (g > 0) & np.isfinite(p) & np.isfinite(g)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if not ok.any():
        return float("nan")
    d = np.log(p[ok]) - np.log(g[ok])
    return float(np.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0)))
