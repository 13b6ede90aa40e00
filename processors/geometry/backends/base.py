"""The geometry backend interface: sampled frames in, per-frame camera geometry out.

A backend gets the frames of one clip sampled at about 5 fps (SPEC.md §3: every
``int(0.2 * fps)`` frames; :func:`sample_step`) and returns a :class:`GeometryResult`:
per annotated frame a w2c pose row ``[tx, ty, tz, qx, qy, qz, qw]`` (conventions of
``processors/geometry/poses.py``), pixel intrinsics ``[fx, fy, cx, cy]``, optionally a
dense depth map and a motion-probability map, whether the frame was registered by
the backend itself or interpolated between registered neighbours, a success flag with
the reason of a failure, and the backend's scale convention in words.

Rules every backend keeps:

* a frame the backend could not register is never silently invented: interior gaps
  may be interpolated (:func:`fill_gaps`, marked in ``registered``), frames before the
  first or after the last registered one are dropped (the annotated frames and
  ``indexes.txt`` say which video frames have geometry), and a clip with too small a
  registered share, or a camera that barely moves, ends with ``success=False`` and a
  ``reason``;
* the world frame is the first annotated camera (identity pose), as MegaSaM's.

Backends register by name (:func:`register_backend`); the annotate stage picks one
from the configuration (``annotate.backend``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..poses import (
    camera_centers,
    c2w_to_poses7,
    invert_extrinsics,
    matrix_to_quat,
    poses7_to_c2w,
    quat_normalize,
    quat_to_matrix,
)

__all__ = [
    "GeometryBackend",
    "GeometryResult",
    "GeometryError",
    "BACKENDS",
    "register_backend",
    "get_backend",
    "sample_step",
    "fill_gaps",
    "rebase_to_first",
    "baseline_ratio",
    "self_calibrate_focal",
    "survey_pairs",
    "PairSurvey",
]


class GeometryError(RuntimeError):
    """A backend cannot run at all (missing package or files); the message says what to do."""


@dataclass
class GeometryResult:
    """Camera geometry of one clip's annotated frames (N of them).

    ``frame_indexes``: video frame number of each annotated frame. ``registered``: True
    where the backend registered the frame itself, False where the pose was
    interpolated. ``depth``: ``(N, H, W)`` z-depth in the backend's scale, or None.
    ``motion_prob``: ``(N, H, W)`` in [0, 1], or None. ``extras["sparse_depth"]`` (optional):
    per annotated frame ``(K, 3)`` rows ``[u, v, z]`` of the backend's points seen in it
    (pixel coordinates, z in the backend's units; None for interpolated frames), used to
    align a depth model's output (``depth.align_depth``).
    """

    backend: str
    version: str
    success: bool
    reason: str
    scale_convention: str
    frame_indexes: NDArray[np.int64]
    poses: NDArray[np.float64]  # (N, 7) w2c
    intrinsics: NDArray[np.float64]  # (N, 4) pixel fx, fy, cx, cy
    registered: NDArray[np.bool_]
    num_sampled: int  # frames the backend was given (registered share = registered / this)
    width: int
    height: int
    depth: NDArray[np.float32] | None = None
    motion_prob: NDArray[np.float32] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(len(self.frame_indexes))

    @property
    def registered_share(self) -> float:
        """Frames the backend registered itself, over the frames it was given."""
        return float(np.count_nonzero(self.registered)) / self.num_sampled if self.num_sampled else 0.0

    @classmethod
    def failure(cls, backend: str, version: str, reason: str, scale: str, num_sampled: int, width: int,
                height: int, registered: int = 0) -> "GeometryResult":
        """An unsuccessful result: no poses, with the reason."""
        return cls(backend, version, False, reason, scale, np.zeros(0, np.int64), np.zeros((0, 7)),
                   np.zeros((0, 4)), np.zeros(registered, bool) if registered == 0 else np.ones(registered, bool),
                   num_sampled, width, height)


class GeometryBackend(ABC):
    """A pose (and optionally depth) estimator over one clip's sampled frames."""

    name: ClassVar[str]
    #: How the backend's translations are scaled, in words (SPEC.md §3 "Scale").
    scale_convention: ClassVar[str]

    @abstractmethod
    def version(self) -> str:
        """Version string recorded in every annotation (tool and its settings)."""

    def setup(self) -> None:
        """Check that the backend can run (packages, files); raise GeometryError if not."""

    @abstractmethod
    def estimate(self, frames: NDArray[np.uint8], frame_indexes: NDArray[np.int64]) -> GeometryResult:
        """Geometry of frames ``(N, H, W, 3)`` RGB uint8 whose video frame numbers are ``frame_indexes``."""


BACKENDS: dict[str, type[GeometryBackend]] = {}


def register_backend(cls: type[GeometryBackend]) -> type[GeometryBackend]:
    """Class decorator: make a backend selectable by name."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> type[GeometryBackend]:
    """The backend class registered as ``name``."""
    from . import colmap, megasam  # noqa: F401  # registers the built-in backends

    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown geometry backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


def sample_step(fps: float, target_fps: float = 5.0) -> int:
    """Frame step for sampling at about ``target_fps`` (SPEC.md §3: ``int(0.2 * fps)``), at least 1."""
    return max(1, int(fps / target_fps)) if target_fps > 0 else 1


def rebase_to_first(poses: NDArray[np.float64]) -> NDArray[np.float64]:
    """Re-express w2c pose rows in the frame of the first camera (which becomes identity)."""
    c2w = poses7_to_c2w(poses)
    first_w2c = invert_extrinsics(c2w[0])
    A = np.vstack([first_w2c, [0, 0, 0, 1]])
    out = np.einsum("ij,njk->nik", A, np.concatenate([c2w, np.tile([[[0, 0, 0, 1.0]]], (len(c2w), 1, 1))], axis=1))
    return c2w_to_poses7(out[:, :3, :])


def _slerp(q0: NDArray[np.float64], q1: NDArray[np.float64], w: float) -> NDArray[np.float64]:
    if np.dot(q0, q1) < 0:
        q1 = -q1
    d = float(np.clip(np.dot(q0, q1), -1.0, 1.0))
    if d > 0.9995:
        return quat_normalize(q0 + w * (q1 - q0))
    th = np.arccos(d)
    return (np.sin((1 - w) * th) * q0 + np.sin(w * th) * q1) / np.sin(th)


def fill_gaps(poses: NDArray[np.float64], registered: NDArray[np.bool_], max_gap: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Interpolate unregistered frames between registered neighbours.

    ``poses (N, 7)`` hold valid rows where ``registered``. Interior gaps of at most
    ``max_gap`` frames get camera centres interpolated linearly and orientations by
    slerp (c2w), by position in the (evenly spaced) sample. Returns ``(poses, keep)``: ``keep`` is
    False for frames before the first / after the last registered frame and inside
    longer gaps (those are dropped, never extrapolated).
    """
    reg = np.asarray(registered, bool)
    out = np.array(poses, dtype=np.float64, copy=True)
    keep = reg.copy()
    idx = np.flatnonzero(reg)
    if len(idx) == 0:
        return out, keep
    c2w = poses7_to_c2w(np.where(reg[:, None], out, np.array([0, 0, 0, 0, 0, 0, 1.0])))
    centres = c2w[:, :, 3]
    quats = matrix_to_quat(c2w[:, :, :3])  # c2w orientations
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if gap <= 0 or gap > max_gap:
            continue
        for k in range(a + 1, b):
            w = (k - a) / (b - a)
            c = (1 - w) * centres[a] + w * centres[b]
            R = quat_to_matrix(_slerp(quats[a], quats[b], w))
            out[k] = c2w_to_poses7(np.concatenate([R, c[:, None]], axis=1))
            keep[k] = True
    return out, keep


def baseline_ratio(poses: NDArray[np.float64], scene_depth: float) -> float:
    """How far the camera travels, as a share of the median scene depth (0 for a tripod)."""
    c = camera_centers(poses)
    if len(c) < 2 or not np.isfinite(scene_depth) or scene_depth <= 0:
        return 0.0
    extent = float(np.max(np.linalg.norm(c - c[0], axis=1)))
    return extent / scene_depth


def self_calibrate_focal(
    fundamentals: list[NDArray[np.float64]],
    weights: list[float],
    width: int,
    height: int,
    lo: float = 0.3,
    hi: float = 3.0,
    steps: int = 271,
) -> float | None:
    """Focal length (pixels) from fundamental matrices of frame pairs (Mendonça & Cipolla 1999).

    For the right focal ``f`` (principal point at the centre, square pixels) every
    ``E = K^T F K`` is an essential matrix, whose two non-zero singular values are equal;
    the cost is the inlier-weighted sum of ``(s1 - s2) / (s1 + s2)`` over the pairs, and
    ``f`` is searched on a grid of ``[lo, hi] x max(width, height)``. Why: SfM's default
    prior (1.2 x the larger side, about 45 degrees) is far from most video cameras (60-70
    degrees), and on rotation-heavy shots bundle adjustment then settles in a wrong
    focal-rotation pair. Returns None with fewer than 3 usable pairs or a flat cost.
    """
    Fs = [np.asarray(F, dtype=np.float64) for F in fundamentals]
    ok = [i for i, F in enumerate(Fs) if F.shape == (3, 3) and np.linalg.norm(F) > 0 and np.all(np.isfinite(F))]
    if len(ok) < 3:
        return None
    side = float(max(width, height))
    fs = np.linspace(lo * side, hi * side, steps)
    K = np.zeros((steps, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = fs
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2.0, height / 2.0, 1.0
    cost = np.zeros(steps)
    for i in ok:
        E = np.einsum("nji,jk,nkl->nil", K, Fs[i], K)  # K^T F K for every candidate
        s = np.linalg.svd(E, compute_uv=False)
        cost += weights[i] * (s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-12)
    best = int(np.argmin(cost))
    if best in (0, steps - 1) or cost.max() - cost.min() < 1e-6 * max(cost.max(), 1e-12):
        return None  # at the edge of the range or flat: no information
    return float(fs[best])


@dataclass(frozen=True)
class PairSurvey:
    """What a few frame pairs say before SfM runs (:func:`survey_pairs`)."""

    focal: float | None  # self-calibrated focal length, pixels of the frames; None if unknown
    homography_share: float  # median H-inliers / F-inliers over the pairs (1.0: no parallax)
    pairs: int  # pairs with enough matches


def survey_pairs(frames: NDArray[np.uint8], max_pairs: int = 12, work_width: int = 640) -> PairSurvey:
    """Self-calibrate the focal length and measure parallax from SIFT matches between a
    few frame pairs (OpenCV), before SfM.

    Pairs are ``(i, i + g)`` for evenly spread ``i`` and gaps ``g`` of 2, 4, a sixth and a
    third of the clip's samples (one baseline alone gave focal errors up to 40 %).
    Focal: each pair's fundamental matrix (RANSAC, 1 px) weighted by its inliers, into
    :func:`self_calibrate_focal`; run before SfM so that feature verification already
    sees a calibrated camera. Parallax: the share of F-inliers a homography (2 px) also
    explains, median over up to 4 pairs a third of the clip apart. A static camera, a pan in place and a pure
    zoom relate frames by a homography (share about 1.0; measured 0.95-1.0 on the
    rendered static and zoom clips against 0.4-0.8 for moving cameras), and SfM then
    invents a translation (a zoom becomes a dolly), so such clips are refused up front.
    """
    import cv2

    n, h, w = frames.shape[:3]
    if n < 3:
        return PairSurvey(None, 1.0, 0)
    s = min(1.0, work_width / w)
    size = (int(round(w * s)), int(round(h * s)))
    sift = cv2.SIFT_create(2000)
    cache: dict[int, Any] = {}

    def feats(i: int) -> Any:
        if i not in cache:
            g = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
            cache[i] = sift.detectAndCompute(cv2.resize(g, size, interpolation=cv2.INTER_AREA) if s < 1 else g, None)
        return cache[i]

    matcher = cv2.BFMatcher(cv2.NORM_L2)

    def matched_points(i: int, j: int) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """Ratio-test SIFT matches between samples i and j, or None with fewer than 30."""
        (k1, d1), (k2, d2) = feats(i), feats(j)
        if d1 is None or d2 is None or len(k1) < 30 or len(k2) < 30:
            return None
        good = [m for m, m2 in (p for p in matcher.knnMatch(d1, d2, k=2) if len(p) == 2) if m.distance < 0.8 * m2.distance]
        if len(good) < 30:
            return None
        return np.float32([k1[m.queryIdx].pt for m in good]), np.float32([k2[m.trainIdx].pt for m in good])

    Fs: list[NDArray[np.float64]] = []
    wts: list[float] = []
    shares: list[float] = []
    wide = max(4, n // 3)
    starts = np.unique(np.linspace(0, max(0, n - 1 - wide // 2), max(1, max_pairs // 2)).astype(int))
    for i in starts:
        for g in sorted({2, 4, max(2, wide // 2), wide}):  # several baselines: each alone can mislead
            j = min(n - 1, i + g)
            if j <= i:
                continue
            pts = matched_points(int(i), int(j))
            if pts is None:
                continue
            p1, p2 = pts
            F, inl = cv2.findFundamentalMat(p1, p2, cv2.FM_RANSAC, 1.0, 0.999)
            if F is None or F.shape != (3, 3) or inl is None or inl.sum() < 30:
                continue
            Fs.append(F)
            wts.append(float(inl.sum()))
    # Parallax on wide pairs: between neighbouring samples of a slow walk a homography
    # still fits most matches; a third of the clip apart it no longer does.
    gap = wide
    for i in np.unique(np.linspace(0, max(0, n - 1 - gap), 4).astype(int)):
        j = min(n - 1, int(i) + gap)
        if j <= i:
            continue
        pts = matched_points(int(i), j)
        if pts is None:
            continue
        p1, p2 = pts
        _, fin = cv2.findFundamentalMat(p1, p2, cv2.FM_RANSAC, 1.0, 0.999)
        _, hin = cv2.findHomography(p1, p2, cv2.RANSAC, 2.0)
        if fin is not None and hin is not None and fin.sum() >= 30:
            shares.append(float(hin.sum()) / float(fin.sum()))
    f = self_calibrate_focal(Fs, wts, size[0], size[1])
    return PairSurvey(None if f is None else f / s, float(np.median(shares)) if shares else 1.0, len(Fs))

