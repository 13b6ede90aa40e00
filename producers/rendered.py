"""Rendered clips with ground truth: textured 3-D scenes seen along known camera paths.

A small CPU ray-caster (NumPy + OpenCV, no OpenGL): the scene is a closed, textured
room with textured boxes in it, so every pixel hits a surface and there is real
parallax. Each face is a planar rectangle; per face the ray-plane intersection is an
affine function of the pixel coordinates divided by another, so a face costs a few
vectorised array operations over the part of the image it can cover. Textures are
multi-scale noise plus random shapes (corners and blobs for SIFT), sampled bilinearly
with ``cv2.remap``.

Ground truth per frame: the camera pose (w2c ``[t, q]`` rows, the conventions of
``spatialvid.processors.geometry.poses``: OpenCV axes, x right, y down, z forward;
world "up" is -y), pixel intrinsics ``[fx, fy, cx, cy]``, z-depth (metres) and the
mask of the moving object (all False when the scene has none).

Sequences (:data:`SEQUENCES`): ``forward``, ``orbit``, ``pan`` (panning while walking:
a pan in place has no parallax, so no monocular method can recover its translation;
``pan_truck`` pans while trucking the same way, the bas-relief ambiguity),
``pedestal``, ``handheld`` (a walk with smooth random jitter), and the cases that must
end unsuccessful: ``static``, ``zoom`` (camera fixed, focal length grows), ``textureless``
(flat-coloured surfaces); ``dynamic`` adds a box moving through the scene.

Used by the geometry tests (low resolution, few frames) and ``bench/bench_geometry.py``
(720p, several seconds).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from spatialvid.processors.geometry.poses import poses7_from_c2w

__all__ = [
    "Face",
    "Scene",
    "CameraPath",
    "RenderedClip",
    "SEQUENCES",
    "default_scene",
    "render_sequence",
    "write_video",
    "look_rotation",
]

FLOOR_Y = 1.6  # the floor is 1.6 m below the world origin (y points down)
NEAR = 0.05


@dataclass(frozen=True)
class Face:
    """A textured rectangle ``origin + a U + b V``, ``a in [0, size_u]``, ``b in [0, size_v]``."""

    origin: tuple[float, float, float]
    u: tuple[float, float, float]  # unit vector
    v: tuple[float, float, float]  # unit vector, orthogonal to u
    size_u: float
    size_v: float
    texture: int  # index into Scene.textures
    texel: float = 0.01  # metres per texel
    shade: float = 1.0  # constant lighting factor of the face
    moving: bool = False  # part of the moving object (ground-truth mask)

    def moved(self, offset: NDArray[np.float64]) -> "Face":
        o = np.asarray(self.origin) + offset
        return Face(tuple(o), self.u, self.v, self.size_u, self.size_v, self.texture, self.texel, self.shade, self.moving)


def box_faces(center: Sequence[float], half: Sequence[float], texture: int, texel: float = 0.006,
              moving: bool = False) -> list[Face]:
    """The six outward faces of an axis-aligned box."""
    cx, cy, cz = center
    hx, hy, hz = half
    x0, x1, y0, y1, z0, z1 = cx - hx, cx + hx, cy - hy, cy + hy, cz - hz, cz + hz
    X, Y, Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
    return [
        Face((x0, y0, z0), X, Y, 2 * hx, 2 * hy, texture, texel, 0.95, moving),  # front (-z)
        Face((x0, y0, z1), X, Y, 2 * hx, 2 * hy, texture + 1, texel, 0.75, moving),  # back (+z)
        Face((x0, y0, z0), Z, Y, 2 * hz, 2 * hy, texture + 2, texel, 0.8, moving),  # left (-x)
        Face((x1, y0, z0), Z, Y, 2 * hz, 2 * hy, texture + 3, texel, 0.85, moving),  # right (+x)
        Face((x0, y0, z0), X, Z, 2 * hx, 2 * hz, texture + 4, texel, 1.05, moving),  # top (-y)
        Face((x0, y1, z0), X, Z, 2 * hx, 2 * hz, texture + 5, texel, 0.6, moving),  # bottom
    ]


def make_texture(seed: int, size: int = 512, flat: bool = False) -> NDArray[np.uint8]:
    """A colour texture (``size x size x 3``): smooth noise at several scales plus random
    discs and rectangles, blurred a little so that minification aliases less. ``flat``
    gives one constant colour (the textureless case)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 200, 3).astype(np.float32)
    if flat:
        return np.broadcast_to(base, (size, size, 3)).astype(np.uint8)
    acc = np.zeros((size, size, 3), np.float32)
    for scale, weight in ((64, 60.0), (16, 40.0), (6, 25.0)):
        small = rng.standard_normal((size // scale + 2, size // scale + 2, 3)).astype(np.float32)
        acc += weight * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(acc + base, 0, 255).astype(np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(4, 24))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x, y), (x + 2 * r, y + int(rng.integers(4, 40))), colour, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


@dataclass
class Scene:
    """Static faces, an optional moving box (``moving_path(t) -> offset``) and textures."""

    faces: list[Face]
    textures: list[NDArray[np.uint8]]
    moving_faces: list[Face] = field(default_factory=list)
    moving_path: Callable[[float], NDArray[np.float64]] | None = None

    def pyramid(self, texture: int) -> list[NDArray[np.uint8]]:
        """Mip levels of a texture (each half the size of the one before), cached."""
        cache = self.__dict__.setdefault("_pyramids", {})
        k = texture % len(self.textures)
        if k not in cache:
            levels = [self.textures[k]]
            while len(levels) < 6 and levels[-1].shape[0] >= 16:
                levels.append(cv2.pyrDown(levels[-1]))
            cache[k] = levels
        return cache[k]

    def faces_at(self, t: float) -> list[Face]:
        if not self.moving_faces or self.moving_path is None:
            return self.faces
        off = self.moving_path(t)
        return self.faces + [f.moved(off) for f in self.moving_faces]


def _cube_path(t: float) -> NDArray[np.float64]:
    """Offset of the moving cube at time ``t`` seconds."""
    return np.array([-3.0 + 1.2 * t, 0.0, 0.0])


def default_scene(seed: int = 0, textureless: bool = False, moving_object: bool = False) -> Scene:
    """A 16 x 5.6 x 24 m room (floor, ceiling, four walls) with five boxes on the floor."""
    x0, x1, y0, y1, z0, z1 = -8.0, 8.0, -4.0, FLOOR_Y, -10.0, 14.0
    X, Y, Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
    faces = [
        Face((x0, y1, z0), X, Z, x1 - x0, z1 - z0, 0, 0.012, 1.0),  # floor
        Face((x0, y0, z0), X, Z, x1 - x0, z1 - z0, 1, 0.016, 0.7),  # ceiling
        Face((x0, y0, z1), X, Y, x1 - x0, y1 - y0, 2, 0.012, 0.9),  # far wall
        Face((x0, y0, z0), X, Y, x1 - x0, y1 - y0, 3, 0.012, 0.9),  # near wall
        Face((x0, y0, z0), Z, Y, z1 - z0, y1 - y0, 4, 0.012, 0.8),  # left wall
        Face((x1, y0, z0), Z, Y, z1 - z0, y1 - y0, 5, 0.012, 0.85),  # right wall
    ]
    tex = 6
    for center_xz, half in (((2.5, 6.0), (1.0, 1.0, 1.0)), ((-3.0, 9.0), (1.5, 2.0, 1.5)),
                            ((0.5, 12.0), (2.0, 1.2, 1.0)), ((-2.0, 5.0), (0.6, 0.6, 0.6)),
                            ((5.0, 1.0), (0.8, 1.5, 0.8))):
        cx, cz = center_xz
        faces += box_faces((cx, FLOOR_Y - half[1], cz), half, tex)
        tex += 6
    moving: list[Face] = []
    path: Callable[[float], NDArray[np.float64]] | None = None
    if moving_object:
        # A 1.2 m cube sliding left to right across the view at 1.2 m/s, 4 m ahead.
        moving = box_faces((0.0, FLOOR_Y - 0.6, 3.5), (0.6, 0.6, 0.6), tex, moving=True)
        tex += 6
        path = _cube_path

    textures = [make_texture(seed * 1000 + i, flat=textureless) for i in range(tex)]
    return Scene(faces, textures, moving, path)


# --------------------------------------------------------------------------- camera paths
def look_rotation(forward: NDArray[np.float64], roll: float = 0.0) -> NDArray[np.float64]:
    """c2w rotation whose z axis is ``forward`` and whose y axis points as far down as it can."""
    f = forward / np.linalg.norm(forward)
    up = np.array([0.0, -1.0, 0.0])
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R = np.stack([right, down, f], axis=1)
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return R


def _yaw_pitch(yaw: float, pitch: float) -> NDArray[np.float64]:
    """Viewing direction for yaw (right positive) and pitch (down positive), radians."""
    return np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])


@dataclass(frozen=True)
class CameraPath:
    """A named camera path: ``pose(s) -> (R_c2w, centre, focal_scale)`` for ``s in [0, 1]``."""

    name: str
    pose: Callable[[float], tuple[NDArray[np.float64], NDArray[np.float64], float]]
    textureless: bool = False
    moving_object: bool = False
    expect_success: bool = True
    note: str = ""


def _forward(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    c = np.array([0.4 * math.sin(math.pi * s), -0.2, -6.0 + 6.0 * s])
    return look_rotation(_yaw_pitch(0.15 * math.sin(math.pi * s), 0.05)), c, 1.0


def _orbit(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    th = math.radians(-35 + 70 * s)
    target = np.array([0.0, 0.3, 8.0])
    c = target + np.array([6.0 * math.sin(th), -0.8, -6.0 * math.cos(th)])
    return look_rotation(target - c), c, 1.0


def _pan(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    c = np.array([-0.5 + 1.0 * s, -0.1, -2.0 + 3.0 * s])
    return look_rotation(_yaw_pitch(math.radians(-25 + 50 * s), 0.05)), c, 1.0


def _pan_truck(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    c = np.array([-2.0 + 4.0 * s, -0.1, 0.0])
    return look_rotation(_yaw_pitch(math.radians(-25 + 50 * s), 0.05)), c, 1.0


def _pedestal(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    c = np.array([0.5, 1.0 - 3.0 * s, -3.0])
    return look_rotation(_yaw_pitch(0.05, math.radians(2 + 12 * s))), c, 1.0


def _smooth_noise(s: float, seed: int, amp: float) -> NDArray[np.float64]:
    """Smooth pseudo-random 3-vector of amplitude ``amp``: a few sines with fixed phases."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(1.0, 6.0, (3, 3))
    phase = rng.uniform(0, 2 * math.pi, (3, 3))
    return amp * np.sin(2 * math.pi * freq * s + phase).sum(axis=1) / 3.0


def _handheld(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    c = np.array([-0.5 + 1.0 * s, -0.2, -6.0 + 4.0 * s]) + _smooth_noise(s, 7, 0.05)
    yaw, pitch, roll = _smooth_noise(s, 11, math.radians(2.0))
    return look_rotation(_yaw_pitch(0.1 + yaw, 0.05 + pitch), roll), c, 1.0


def _static(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    return look_rotation(_yaw_pitch(0.1, 0.05)), np.array([0.0, -0.2, -4.0]), 1.0


def _zoom(s: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    R, c, _ = _static(s)
    return R, c, 1.0 + 0.8 * s


SEQUENCES: dict[str, CameraPath] = {p.name: p for p in (
    CameraPath("forward", _forward, note="dolly in, 6 m, gentle sway"),
    CameraPath("orbit", _orbit, note="70 degree arc around a point 6 m away"),
    CameraPath("pan", _pan, note="pan right 50 degrees while walking 3 m"),
    CameraPath("pan_truck", _pan_truck, note="pan right 50 degrees while trucking right 4 m: the "
               "rotation/translation (bas-relief) ambiguity, a known hard case"),
    CameraPath("pedestal", _pedestal, note="rise 3 m, tilting down"),
    CameraPath("handheld", _handheld, note="walk 4 m with smooth jitter (2 deg, 5 cm)"),
    CameraPath("static", _static, expect_success=False, note="locked-off camera: no baseline"),
    CameraPath("zoom", _zoom, expect_success=False, note="fixed camera, focal x1.8: no baseline"),
    CameraPath("textureless", _forward, textureless=True, expect_success=False, note="flat colours"),
    CameraPath("dynamic", _pan, moving_object=True, note="as pan; a cube slides across the view"),
)}


# --------------------------------------------------------------------------- rendering
@dataclass
class RenderedClip:
    """Frames and their ground truth. ``frame_indexes[i]`` is frame i's number in the video."""

    name: str
    frames: NDArray[np.uint8]  # (N, H, W, 3) RGB
    poses: NDArray[np.float64]  # (N, 7) w2c [t, q]
    intrinsics: NDArray[np.float64]  # (N, 4) pixel [fx, fy, cx, cy]
    depth: NDArray[np.float32]  # (N, H, W) z-depth, metres
    masks: NDArray[np.bool_]  # (N, H, W) moving object
    frame_indexes: NDArray[np.int64]
    fps: float


def _sample(tex: NDArray[np.uint8], x: NDArray[np.float32], y: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Bilinear, wrapping texture lookup at texel coordinates ``x, y`` (1-D) -> ``(N, 3)``."""
    h, w = tex.shape[:2]
    n = x.size
    cols = 4096  # cv2.remap maps must stay below 32767 on each side
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n] = np.mod(x, w)
    my[:n] = np.mod(y, h)
    out = cv2.remap(tex, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, 3)[:n]


def _sample_mip(levels: list[NDArray[np.uint8]], x: NDArray[np.float32], y: NDArray[np.float32],
                footprint: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Trilinear texture lookup: the two pyramid levels around ``log2(footprint)`` (texels per
    pixel), blended. Without it, distant and grazing surfaces alias into view-dependent
    patterns that no real camera shows and that look like moving features to SfM."""
    lvl = np.clip(np.log2(np.maximum(footprint, 1e-6)), 0.0, len(levels) - 1.0)
    lo = np.floor(lvl).astype(np.int32)
    w = (lvl - lo)[:, None]
    out = np.zeros((x.size, 3), np.float32)
    for k in np.unique(lo):
        sel = lo == k
        a = _sample(levels[k], x[sel] / 2**k, y[sel] / 2**k).astype(np.float32)
        k1 = min(k + 1, len(levels) - 1)
        b = _sample(levels[k1], x[sel] / 2**k1, y[sel] / 2**k1).astype(np.float32)
        out[sel] = a * (1 - w[sel]) + b * w[sel]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _render_frame(scene: Scene, faces: list[Face], R: NDArray[np.float64], c: NDArray[np.float64],
                  K: NDArray[np.float64], width: int, height: int) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.bool_]]:
    fx, fy, cx, cy = K
    xs = ((np.arange(width, dtype=np.float32) + 0.5 - cx) / fx)[None, :]
    ys = ((np.arange(height, dtype=np.float32) + 0.5 - cy) / fy)[:, None]
    zbuf = np.full((height, width), np.inf, np.float32)
    fid = np.full((height, width), -1, np.int32)
    ta = np.zeros((height, width), np.float32)
    tb = np.zeros((height, width), np.float32)
    fp = np.ones((height, width), np.float32)  # texture footprint of a pixel, in metres
    Rw2c = R.T
    for k, f in enumerate(faces):
        o, U, V = np.asarray(f.origin), np.asarray(f.u), np.asarray(f.v)
        n = np.cross(U, V)
        # Screen box of the face when it lies wholly in front of the camera (else: all).
        corners = o + np.array([[0, 0], [f.size_u, 0], [0, f.size_v], [f.size_u, f.size_v]]) @ np.stack([U, V])
        cam = (corners - c) @ Rw2c.T
        if np.all(cam[:, 2] <= NEAR):
            continue
        r0, r1, c0, c1 = 0, height, 0, width
        if np.all(cam[:, 2] > NEAR):
            px = fx * cam[:, 0] / cam[:, 2] + cx
            py = fy * cam[:, 1] / cam[:, 2] + cy
            c0, c1 = max(0, int(px.min()) - 1), min(width, int(px.max()) + 2)
            r0, r1 = max(0, int(py.min()) - 1), min(height, int(py.max()) + 2)
            if c0 >= c1 or r0 >= r1:
                continue
        X, Y = xs[:, c0:c1], ys[r0:r1]
        m = Rw2c @ n  # n . d_world = m . d_cam, with d_cam = (x, y, 1)
        den = m[0] * X + m[1] * Y + m[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32(n @ (o - c)) / den  # z-depth of the hit (d_cam has z = 1)
        du, dv = Rw2c @ U, Rw2c @ V  # U . d_world = du . d_cam
        a = np.float32(U @ (c - o)) + t * (du[0] * X + du[1] * Y + du[2])
        b = np.float32(V @ (c - o)) + t * (dv[0] * X + dv[1] * Y + dv[2])
        zb = zbuf[r0:r1, c0:c1]
        win = (t > NEAR) & (t < zb) & (a >= 0) & (a <= f.size_u) & (b >= 0) & (b <= f.size_v)
        zb[win] = t[win]
        fid[r0:r1, c0:c1][win] = k
        ta[r0:r1, c0:c1][win] = a[win]
        tb[r0:r1, c0:c1][win] = b[win]
        # Footprint: ray length / f, stretched by the incidence angle (|n.d| / |d|).
        ray = np.sqrt(X * X + Y * Y + 1.0)
        cos = np.maximum(np.abs(den) / ray, 0.05)
        fp[r0:r1, c0:c1][win] = (t * ray / (cos * np.float32(fx)))[win]
    img = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), bool)
    for k in np.unique(fid):
        if k < 0:
            continue
        f = faces[k]
        sel = fid == k
        vals = _sample_mip(scene.pyramid(f.texture), ta[sel] / f.texel, tb[sel] / f.texel, fp[sel] / f.texel)
        img[sel] = np.clip(vals.astype(np.float32) * f.shade, 0, 255).astype(np.uint8)
        if f.moving:
            mask |= sel
    zbuf[~np.isfinite(zbuf)] = 0.0
    return img, zbuf, mask


def render_sequence(
    name: str,
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    duration_s: float = 6.0,
    frame_indexes: Sequence[int] | None = None,
    seed: int = 0,
    focal_scale: float = 0.78,
    progress: bool = False,
) -> RenderedClip:
    """Render sequence ``name`` (a key of :data:`SEQUENCES`).

    The clip lasts ``duration_s`` at ``fps``; only ``frame_indexes`` are rendered (all
    frames when None), so a benchmark can render just the frames a backend samples.
    The focal length is ``focal_scale * width`` pixels (about 65 degrees horizontal).
    """
    spec = SEQUENCES[name]
    scene = default_scene(seed, textureless=spec.textureless, moving_object=spec.moving_object)
    total = max(2, int(round(duration_s * fps)))
    idx = np.arange(total) if frame_indexes is None else np.asarray(frame_indexes, dtype=np.int64)
    frames, poses, Ks, depths, masks = [], [], [], [], []
    it = idx
    if progress:
        from tqdm import tqdm

        it = tqdm(idx, desc=f"render {name}", unit="frame")
    for i in it:
        s = float(i) / (total - 1)
        R, c, zoom = spec.pose(s)
        f = focal_scale * width * zoom
        K = np.array([f, f, width / 2.0, height / 2.0])
        img, depth, mask = _render_frame(scene, scene.faces_at(float(i) / fps), R, c, K, width, height)
        frames.append(img)
        depths.append(depth)
        masks.append(mask)
        poses.append(poses7_from_c2w(R, c))
        Ks.append(K)
    return RenderedClip(name, np.stack(frames), np.stack(poses), np.stack(Ks), np.stack(depths), np.stack(masks),
                        idx, float(fps))


def write_video(frames: Iterable[NDArray[np.uint8]], path: str | os.PathLike[str], fps: float = 30.0,
                crf: int = 16) -> Path:
    """Encode RGB frames (an ``(N, H, W, 3)`` array or any iterable of ``(H, W, 3)`` frames,
    so a long video need not be held in memory) as H.264 MP4 (PyAV, libx264), atomically."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        for img in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path
