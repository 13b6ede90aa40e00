"""Dense depth by multi-view plane-sweep stereo on a backend's own poses and intrinsics.

The geometry backends estimate camera poses and a sparse cloud; COLMAP's dense stereo
(patch-match) is CUDA-only, so here is a plane-sweep stereo that runs the same code on
the CPU and on CUDA (torch; ``grid_sample`` warps batched over the planes):

1. **Working resolution**: frames are shrunk to ``max_side`` pixels on the longest side
   (area interpolation), grey, intrinsics scaled alike (pixel centres at ``i + 0.5``,
   the convention of COLMAP and of ``producers/rendered.py``).
2. **Neighbours**: per reference frame up to ``num_neighbors`` other frames whose
   baseline is ``min_baseline``-``max_baseline`` of the reference's median scene depth
   (the median depth of the sparse points it sees) and whose optical axis is within
   ``max_view_angle`` degrees, closest to ``target_baseline`` first, preferring one on
   each side in time. A frame with no such neighbour gets no depth (a static camera or a
   pan in place has no baseline: its depth is not observable and is not invented).
3. **Planes**: fronto-parallel planes at depths spaced evenly in inverse depth between
   the 2nd and 98th percentile of the reference's sparse depths (near / 2.5, far x 2.5:
   ``range_margin``; the clip's points for a frame without its own). The count follows the
   largest disparity range over the neighbours (about ``plane_step_px`` pixels per plane),
   within ``[min_planes, max_planes]``. Each plane warps a neighbour into the reference by
   the homography ``K_j (R - t n^T / d) K_i^-1``, i.e. the reference pixel's ray at depth
   ``d`` projected into the neighbour.
4. **Cost**: 1 - ZNCC over a ``window`` x ``window`` box (zero-mean normalised
   cross-correlation: robust to exposure and shading), pixels the neighbour does not see
   invalid; per pixel and plane the mean of the ``best_k`` best neighbours (occlusion:
   a point hidden in one neighbour is seen by another), then a box filter of
   ``aggregate`` pixels over the cost slices.
5. **Winner-take-all** over the planes with sub-plane refinement (parabola through the
   best cost and its two neighbours, in inverse depth). Confidence: the best cost below
   ``max_cost`` and textured reference (window standard deviation >= ``min_texture``).
6. **Geometric consistency** (forward-backward across views): a reference pixel's depth
   is projected into each neighbour, the neighbour's own depth there back-projected into
   the reference; it is kept when at least ``min_consistent`` neighbours agree within
   ``consistency_px`` pixels and ``consistency_depth`` relative depth.
7. Invalid pixels are 0 (never filled in). The maps are upsampled to the frames' size
   (normalised bilinear over valid pixels, the valid mask nearest-neighbour).

Depth is z-depth in the backend's units (``colmap``: median sparse depth = 1), because it
comes from the backend's own poses. Measured on the rendered clips (docs/benchmarks.md,
issue 6): see ``tests/test_mvs.py`` for the floors asserted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from .poses import camera_centers, camera_forward, poses7_to_w2c

__all__ = ["MvsOptions", "MvsResult", "plane_sweep_depth", "VERSION"]

VERSION = "planesweep-zncc-1"


@dataclass(frozen=True)
class MvsOptions:
    """Settings of the plane-sweep stereo (see the module docstring for each step)."""

    max_side: int = 384  # working resolution (longest side, pixels)
    num_neighbors: int = 4
    best_k: int = 2  # per pixel and plane: mean cost of the best k neighbours
    target_baseline: float = 0.08  # baseline / median scene depth preferred
    min_baseline: float = 0.02
    max_baseline: float = 0.4
    max_view_angle: float = 30.0  # degrees between optical axes
    min_planes: int = 48
    max_planes: int = 96
    plane_step_px: float = 1.5  # target disparity step between planes (working pixels)
    # near / margin, far * margin around the sparse depth percentiles: COLMAP's points miss the
    # nearest surfaces (a forward walk's floor); at 1.5 a few pixels out of range matched
    # wildly wrong (SI log error 0.31 against 0.04 on the 320 x 180 forward clip)
    range_margin: float = 2.5
    window: int = 5  # ZNCC window (working pixels)
    aggregate: int = 5  # box filter of the cost slices (1: none)
    max_cost: float = 0.5  # 1 - ZNCC of the winner above this: invalid
    miss_cost: float = 0.8  # cost of a plane where a neighbour does not see the pixel
    min_texture: float = 2.0  # grey-level standard deviation in the window (0-255) below this: invalid
    min_consistent: int = 1
    consistency_px: float = 1.0
    consistency_depth: float = 0.02
    device: str = "auto"  # auto | cpu | cuda
    # torch CPU threads during the sweep (0: torch's setting). On a machine whose cores are
    # shared, 1 is much faster than 2: measured 0.38 against 2.1 CPU-s per frame here, the
    # OpenMP threads spinning at every barrier while the other cores are busy.
    threads: int = 0

    def version(self) -> str:
        return (f"{VERSION}/side{self.max_side}/nb{self.num_neighbors}k{self.best_k}/w{self.window}a{self.aggregate}"
                f"/planes{self.min_planes}-{self.max_planes}/range{self.range_margin}/cost{self.max_cost}"
                f"/geo{self.min_consistent}")


@dataclass
class MvsResult:
    """Dense depth of a clip's frames: ``depth (N, H, W)`` float32, 0 where invalid."""

    depth: NDArray[np.float32]
    valid_share: NDArray[np.float64]  # per frame, share of pixels with depth
    neighbors: list[list[int]]  # per frame, the neighbour frames used (empty: no depth)
    seconds: float
    device: str
    version: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def any_valid(self) -> bool:
        return bool(np.any(self.valid_share > 0))


def _device(name: str) -> Any:
    import torch

    from spatialvid.models import resolve_device

    return torch.device(resolve_device(name, "annotate.device"))


def _depth_range(sparse: Sequence[NDArray[np.float64] | None] | None, n: int, margin: float
                 ) -> list[tuple[float, float] | None]:
    """Per frame ``(near, far)`` from the sparse depths (the clip's for frames without points)."""
    per: list[NDArray[np.float64] | None] = []
    for i in range(n):
        s = None if sparse is None or i >= len(sparse) else sparse[i]
        z = None if s is None or len(s) == 0 else np.asarray(s, np.float64)[:, 2]
        z = None if z is None else z[np.isfinite(z) & (z > 0)]
        per.append(z if z is not None and len(z) >= 8 else None)
    everything = [z for z in per if z is not None]
    whole = np.concatenate(everything) if everything else None
    out: list[tuple[float, float] | None] = []
    for z in per:
        z = z if z is not None else whole
        if z is None:
            out.append(None)
            continue
        lo, hi = np.percentile(z, [2, 98])
        out.append((float(lo) / margin, float(hi) * margin))
    return out


def _median_depth(sparse: Sequence[NDArray[np.float64] | None] | None, i: int, rng: tuple[float, float]) -> float:
    s = None if sparse is None or i >= len(sparse) else sparse[i]
    if s is not None and len(s):
        z = np.asarray(s, np.float64)[:, 2]
        z = z[np.isfinite(z) & (z > 0)]
        if len(z):
            return float(np.median(z))
    return float(np.sqrt(rng[0] * rng[1]))


def select_neighbors(poses: NDArray[np.float64], scene_depth: Sequence[float], opts: MvsOptions) -> list[list[int]]:
    """Per frame, up to ``opts.num_neighbors`` frames with a usable baseline and overlap."""
    c = camera_centers(poses)
    fwd = camera_forward(poses)
    n = len(poses)
    cos_max = np.cos(np.radians(opts.max_view_angle))
    out: list[list[int]] = []
    for i in range(n):
        z = scene_depth[i]
        cands: list[tuple[float, int]] = []
        for j in range(n):
            if j == i or not np.isfinite(z) or z <= 0:
                continue
            ratio = float(np.linalg.norm(c[j] - c[i])) / z
            if not (opts.min_baseline <= ratio <= opts.max_baseline) or float(fwd[i] @ fwd[j]) < cos_max:
                continue
            cands.append((abs(np.log(ratio / opts.target_baseline)), j))
        cands.sort()
        before = [j for _, j in cands if j < i]
        after = [j for _, j in cands if j > i]
        picked: list[int] = []
        # Alternate sides (occlusions differ on each side), best first.
        while len(picked) < opts.num_neighbors and (before or after):
            for side in (before, after):
                if side and len(picked) < opts.num_neighbors:
                    picked.append(side.pop(0))
        out.append(picked)
    return out


def _box(x: Any, k: int) -> Any:
    """Mean over a ``k x k`` box of every slice of ``x (B, C, h, w)``, borders replicated.
    On the CPU through OpenCV's running-sum box filter (about 6x faster than torch's
    pooling here), on CUDA by torch pooling: the same numbers up to float rounding."""
    import torch
    import torch.nn.functional as F

    if k <= 1:
        return x
    if x.device.type == "cpu":
        a = x.detach().contiguous().numpy().reshape(-1, x.shape[-2], x.shape[-1])
        out = np.empty_like(a)
        for c in range(len(a)):
            cv2.blur(a[c], (k, k), dst=out[c], borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(out.reshape(x.shape))
    r = k // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), k, stride=1)


def plane_sweep_depth(
    frames: NDArray[np.uint8],
    poses: NDArray[np.float64],
    intrinsics: NDArray[np.float64],
    sparse: Sequence[NDArray[np.float64] | None] | None = None,
    options: MvsOptions | None = None,
    depth_range: tuple[float, float] | None = None,
) -> MvsResult:
    """Dense z-depth of every frame ``(N, H, W, 3)`` RGB from w2c pose rows ``(N, 7)`` and
    pixel intrinsics ``(N, 4)``; the depth range from ``sparse`` (per frame ``(K, 3)``
    rows ``[u, v, z]``, a backend's ``extras["sparse_depth"]``) or ``depth_range``.
    Without either, or without baseline, the depth is all 0 (invalid)."""
    import torch

    o = options or MvsOptions()
    dev = _device(o.device)
    threads = torch.get_num_threads()
    if o.threads > 0 and dev.type == "cpu":
        torch.set_num_threads(o.threads)
    try:
        return _sweep(frames, poses, intrinsics, sparse, o, dev, depth_range)
    finally:
        torch.set_num_threads(threads)


def _sweep(frames: NDArray[np.uint8], poses: NDArray[np.float64], intrinsics: NDArray[np.float64],
           sparse: Sequence[NDArray[np.float64] | None] | None, o: MvsOptions, dev: Any,
           depth_range: tuple[float, float] | None) -> MvsResult:
    import torch
    import torch.nn.functional as F

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    n, H, W = frames.shape[:3]
    s = min(1.0, o.max_side / max(H, W))
    w, h = max(8, int(round(W * s))), max(8, int(round(H * s)))
    sx, sy = w / W, h / H
    grey = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
                     if (w, h) != (W, H) else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1] = intrinsics[:, 0] * sx, intrinsics[:, 1] * sy
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = intrinsics[:, 2] * sx, intrinsics[:, 3] * sy, 1.0
    w2c = poses7_to_w2c(poses)
    ranges = ([depth_range] * n if depth_range is not None else _depth_range(sparse, n, o.range_margin))
    zmed = [_median_depth(sparse, i, r) if r is not None else float("nan") for i, r in enumerate(ranges)]
    neighbors = select_neighbors(poses, zmed, o)
    neighbors = [nb if ranges[i] is not None else [] for i, nb in enumerate(neighbors)]

    img = torch.from_numpy(grey).to(dev)[:, None]  # (n, 1, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], 0).reshape(3, -1)  # homogeneous pixel centres
    Kt = torch.from_numpy(K).to(dev, torch.float32)
    Kinv = torch.from_numpy(np.linalg.inv(K)).to(dev, torch.float32)
    Rt = torch.from_numpy(w2c[:, :, :3]).to(dev, torch.float32)
    tt = torch.from_numpy(w2c[:, :, 3]).to(dev, torch.float32)

    def relative(i: int, j: int) -> tuple[Any, Any]:
        """Rotation and translation from camera i to camera j."""
        R = Rt[j] @ Rt[i].T
        return R, tt[j] - R @ tt[i]

    raw = torch.zeros((n, h, w), device=dev)
    planes_used: list[int] = []
    t_sweep = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            nbs = neighbors[i]
            if not nbs:
                continue
            near, far = ranges[i]  # type: ignore[misc]
            rays = Kinv[i] @ pix  # (3, h*w), z = 1
            # Plane count: the widest disparity range over the neighbours / plane_step_px.
            span = 0.0
            for j in nbs:
                R, t = relative(i, j)
                base = float(torch.linalg.norm(t))
                span = max(span, float(Kt[j, 0, 0]) * base * (1.0 / near - 1.0 / far))
            D = int(np.clip(np.ceil(span / o.plane_step_px), o.min_planes, o.max_planes))
            planes_used.append(D)
            inv = torch.linspace(1.0 / near, 1.0 / far, D, device=dev)  # index 0 = nearest
            ref = img[i : i + 1]
            mr = _box(ref, o.window)
            vr = (_box(ref * ref, o.window) - mr * mr).clamp_min(0)
            k = min(o.best_k, len(nbs))
            best = [torch.full((D, h, w), o.miss_cost, device=dev) for _ in range(k)]  # sorted, per pixel
            for j in nbs:
                R, t = relative(i, j)
                # Pixel ray at depth d into j: K_j (d R ray + t) ~ a + b / d (the plane
                # homography K_j (R - t n^T / d) K_i^-1 applied to the pixel, n = [0, 0, -1]).
                a = Kt[j] @ (R @ rays)  # (3, h*w)
                b = Kt[j] @ t  # (3,)
                iv = inv[:, None]
                den = torch.addcmul(a[2][None], iv, b[2])  # (D, h*w)
                inside = den > 1e-6
                rden = den.clamp_min_(1e-6).reciprocal_()
                grid = torch.empty((D, h * w, 2), device=dev)
                gx, gy = grid[..., 0], grid[..., 1]
                torch.addcmul(a[0][None], iv, b[0], out=gx)
                gx.mul_(rden).mul_(2.0 / w).sub_(1.0)
                torch.addcmul(a[1][None], iv, b[1], out=gy)
                gy.mul_(rden).mul_(2.0 / h).sub_(1.0)
                inside &= (gx.abs() <= 1.0) & (gy.abs() <= 1.0)
                del den, rden, gx, gy
                warped = F.grid_sample(img[j : j + 1].expand(D, -1, -1, -1), grid.view(D, h, w, 2), mode="bilinear",
                                       padding_mode="border", align_corners=False)[:, 0]  # (D, h, w)
                del grid
                ms = _box(warped, o.window)
                vs = _box(warped * warped, o.window).addcmul_(ms, ms, value=-1.0).clamp_min_(0.0)
                c = _box(warped.mul_(ref[0]), o.window).addcmul_(mr[0], ms, value=-1.0)  # covariance
                del warped, ms
                c.mul_(vs.mul_(vr[0]).add_(1e-2).rsqrt_())  # ZNCC
                c.neg_().add_(1.0).clamp_(0.0, 2.0)
                c.masked_fill_(~inside.view(D, h, w), o.miss_cost)
                del vs, inside
                for l in range(k):  # insert into the sorted best-k
                    hi_ = torch.maximum(best[l], c) if l + 1 < k else None
                    torch.minimum(best[l], c, out=best[l])
                    c = hi_
            agg = best[0] if k == 1 else torch.stack(best, 0).mean(0)
            agg = _box(agg, o.aggregate)  # (D, h, w)
            cmin, idx = agg.min(0)
            # Sub-plane refinement: parabola through the best cost and its neighbours.
            lo = (idx - 1).clamp_min(0)
            hi = (idx + 1).clamp_max(D - 1)
            c0 = agg.gather(0, lo[None])[0]
            c2 = agg.gather(0, hi[None])[0]
            den = c0 - 2 * cmin + c2
            off = torch.where((den > 1e-6) & (idx > 0) & (idx < D - 1), 0.5 * (c0 - c2) / den.clamp_min(1e-6),
                              torch.zeros_like(cmin)).clamp(-0.5, 0.5)
            step = (inv[-1] - inv[0]) / max(D - 1, 1)
            invd = inv[0] + (idx.float() + off) * step
            ok = (cmin <= o.max_cost) & (vr[0, 0].sqrt() >= o.min_texture) & (idx > 0) & (idx < D - 1) & (invd > 0)
            raw[i] = torch.where(ok, 1.0 / invd.clamp_min(1e-9), torch.zeros_like(invd))
        t_geo = time.perf_counter()
        final = _consistency(raw, neighbors, Kt, Kinv, Rt, tt, pix, o) if o.min_consistent > 0 else raw
        up = _upsample(final, H, W)
    depth = up.cpu().numpy().astype(np.float32)
    valid = (depth > 0).reshape(n, -1).mean(1).astype(np.float64)
    t_end = time.perf_counter()
    return MvsResult(depth=depth, valid_share=valid, neighbors=neighbors, seconds=t_end - t_start, device=str(dev),
                     version=o.version(),
                     stats={"work_size": (w, h), "cpu_s": time.process_time() - cpu_start, "planes": planes_used,
                            "sweep_s": t_geo - t_sweep, "consistency_s": t_end - t_geo,
                            "raw_valid_share": float((raw > 0).float().mean()),
                            "frames_with_neighbors": int(sum(1 for nb in neighbors if nb))})


def _consistency(raw: Any, neighbors: list[list[int]], Kt: Any, Kinv: Any, Rt: Any, tt: Any, pix: Any,
                 o: MvsOptions) -> Any:
    """Keep a pixel's depth where at least ``o.min_consistent`` neighbours' own depths agree."""
    import torch
    import torch.nn.functional as F

    n, h, w = raw.shape
    out = torch.zeros_like(raw)
    for i in range(n):
        d = raw[i].reshape(-1)
        if not neighbors[i] or not bool((d > 0).any()):
            continue
        Xi = (Kinv[i] @ pix) * d[None]  # (3, h*w) in camera i
        votes = torch.zeros_like(d)
        for j in neighbors[i]:
            R = Rt[j] @ Rt[i].T
            t = tt[j] - R @ tt[i]
            Xj = R @ Xi + t[:, None]
            q = Kt[j] @ Xj
            z = q[2].clamp_min(1e-6)
            u, v = q[0] / z, q[1] / z
            grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], -1).reshape(1, h, w, 2)
            dj = F.grid_sample(raw[j][None, None], grid, mode="nearest", padding_mode="zeros",
                               align_corners=False).reshape(-1)
            # Back: neighbour pixel (u, v) at its own depth dj, into camera i.
            Pj = (Kinv[j] @ torch.stack([u, v, torch.ones_like(u)], 0)) * dj[None]
            Xb = R.T @ (Pj - t[:, None])
            qb = Kt[i] @ Xb
            zb = qb[2].clamp_min(1e-6)
            err = torch.sqrt((qb[0] / zb - pix[0]) ** 2 + (qb[1] / zb - pix[1]) ** 2)
            good = (d > 0) & (dj > 0) & (q[2] > 1e-6) & (err <= o.consistency_px) & \
                   ((Xb[2] - d).abs() <= o.consistency_depth * d)
            votes += good.float()
        out[i] = torch.where(votes >= o.min_consistent, d, torch.zeros_like(d)).reshape(h, w)
    return out


def _upsample(depth: Any, H: int, W: int) -> Any:
    """``(n, h, w)`` depth (0 = invalid) to ``(n, H, W)``: bilinear over valid pixels only,
    the valid mask by nearest neighbour (no depth is spread into invalid areas)."""
    import torch.nn.functional as F

    n, h, w = depth.shape
    if (h, w) == (H, W):
        return depth
    valid = (depth > 0).float()[:, None]
    inv = torch_where_pos(depth)[:, None]  # interpolate inverse depth (edges blend less badly)
    num = F.interpolate(inv * valid, size=(H, W), mode="bilinear", align_corners=False)
    den = F.interpolate(valid, size=(H, W), mode="bilinear", align_corners=False)
    keep = F.interpolate(valid, size=(H, W), mode="nearest") > 0.5
    inv_up = num / den.clamp_min(1e-6)
    out = 1.0 / inv_up.clamp_min(1e-9)
    return (out * (keep & (den > 0.25)).float())[:, 0]


def torch_where_pos(depth: Any) -> Any:
    """``1 / depth`` where positive, else 0."""
    import torch

    return torch.where(depth > 0, 1.0 / depth.clamp_min(1e-9), torch.zeros_like(depth))
