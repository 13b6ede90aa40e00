"""Camera pose conventions, in one place (SPEC.md §3, §7).

Every other geometry module and every artifact goes through these functions, so the
conventions are stated here once:

Camera axes (OpenCV)
    x points right, y points down, z points forward (along the optical axis), as the
    image is seen by a viewer of the clip. The world frame is whatever the pose
    estimator chose; MegaSaM (the reference backend) puts it at the first camera, so
    with that backend "up" in the world is -y and the ground plane is x-z.

World-to-camera (w2c), the released ``poses.npy``
    ``X_cam = R @ X_world + t``. A pose row is ``[tx, ty, tz, qx, qy, qz, qw]``: the
    translation ``t`` of the w2c transform followed by the unit quaternion of the w2c
    rotation ``R`` in scalar-last order (SciPy's order). The maintainers of SpatialVID
    confirm that ``poses.npy`` is w2c.

Camera-to-world (c2w), the ``extrinsics.npy`` we also write
    ``X_world = R.T @ X_cam + c`` as a 3 x 4 matrix ``[R.T | c]``.

Camera centre
    ``c = -R.T @ t``: the camera position in the world. ``t`` is NOT the camera
    position once the camera has rotated; trajectory metrics and motion instructions
    use ``c`` (the reference implementation used ``t``; see ``metrics.py``).

Intrinsics
    Pixel intrinsics are ``[fx, fy, cx, cy]``. The released ``intrinsics.npy`` holds
    the normalised form ``[fx / (2 cx), fy / (2 cy), 0.5, 0.5]`` (focal lengths in
    units of image width and height when the principal point is the image centre);
    multiply by ``(W, H, W, H)`` to get pixels back at any resolution.

Scale
    Monocular poses have an arbitrary global scale. The thresholds of SPEC.md §3/§4
    assume the reference backend's scale (depth aligned to UniDepth metric depth by a
    median scale/shift, so translations are roughly in metres). Each pose backend
    states its scale convention; nothing here rescales.

All functions are vectorised over any leading batch dimensions and return float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "quat_normalize",
    "quat_conjugate",
    "quat_multiply",
    "quat_rotate",
    "quat_to_matrix",
    "matrix_to_quat",
    "quat_angle",
    "poses7_to_w2c",
    "w2c_to_poses7",
    "invert_extrinsics",
    "w2c_to_c2w",
    "c2w_to_w2c",
    "poses7_to_c2w",
    "c2w_to_poses7",
    "camera_centers",
    "camera_forward",
    "poses7_from_c2w",
    "normalize_intrinsics",
    "denormalize_intrinsics",
    "intrinsics_matrix",
]

Array = NDArray[np.float64]


def _as_float(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- quaternions
def quat_normalize(q: ArrayLike) -> Array:
    """Unit quaternions ``[..., 4]`` in scalar-last order ``[qx, qy, qz, qw]``."""
    q = _as_float(q)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_conjugate(q: ArrayLike) -> Array:
    """Conjugate (the inverse of a unit quaternion), scalar-last ``[qx, qy, qz, qw]``."""
    q = _as_float(q)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_multiply(a: ArrayLike, b: ArrayLike) -> Array:
    """Hamilton product ``a * b`` of scalar-last quaternions ``[..., 4]``.

    As rotations, ``a * b`` applies ``b`` first, then ``a`` (like ``Ra @ Rb``).
    """
    a = _as_float(a)
    b = _as_float(b)
    ax, ay, az, aw = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx, by, bz, bw = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_rotate(q: ArrayLike, v: ArrayLike) -> Array:
    """Rotate vectors ``v [..., 3]`` by unit quaternions ``q [..., 4]`` (scalar-last).

    Same as ``quat_to_matrix(q) @ v`` without building the matrix.
    """
    q = _as_float(q)
    v = _as_float(v)
    ux, uy, uz, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    # t = 2 u x v; v' = v + w t + u x t  (written out: np.cross is slow on small last axes)
    tx = 2.0 * (uy * vz - uz * vy)
    ty = 2.0 * (uz * vx - ux * vz)
    tz = 2.0 * (ux * vy - uy * vx)
    return np.stack(
        [
            vx + w * tx + (uy * tz - uz * ty),
            vy + w * ty + (uz * tx - ux * tz),
            vz + w * tz + (ux * ty - uy * tx),
        ],
        axis=-1,
    )


def quat_to_matrix(q: ArrayLike) -> Array:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` (scalar-last).

    The quaternion is normalised first, so slightly non-unit input is fine.
    """
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    out = np.empty(x.shape + (3, 3))
    out[..., 0, 0] = 1 - 2 * (y * y + z * z)
    out[..., 0, 1] = 2 * (x * y - z * w)
    out[..., 0, 2] = 2 * (x * z + y * w)
    out[..., 1, 0] = 2 * (x * y + z * w)
    out[..., 1, 1] = 1 - 2 * (x * x + z * z)
    out[..., 1, 2] = 2 * (y * z - x * w)
    out[..., 2, 0] = 2 * (x * z - y * w)
    out[..., 2, 1] = 2 * (y * z + x * w)
    out[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return out


def matrix_to_quat(R: ArrayLike) -> Array:
    """Unit quaternions ``[..., 4]`` (scalar-last, ``qw >= 0``) from rotations ``[..., 3, 3]``."""
    from scipy.spatial.transform import Rotation

    R = _as_float(R)
    lead = R.shape[:-2]
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q = np.where(q[:, 3:] < 0, -q, q)  # one of the two covers, for reproducible files
    return q.reshape(lead + (4,))


def quat_angle(a: ArrayLike, b: ArrayLike) -> Array:
    """Geodesic angle in radians (in [0, pi]) between the rotations of quaternions ``a`` and ``b``.

    ``2 * atan2(|vec(b a^-1)|, |w(b a^-1)|)``: equal to ``2 acos(w)`` but accurate for
    small angles, and the same for ``q`` and ``-q`` (both cover one rotation).
    """
    rel = quat_multiply(b, quat_conjugate(a))
    return 2.0 * np.arctan2(np.linalg.norm(rel[..., :3], axis=-1), np.abs(rel[..., 3]))


# --------------------------------------------------------------------------- extrinsics
def poses7_to_w2c(poses: ArrayLike) -> Array:
    """w2c matrices ``[..., 3, 4]`` = ``[R | t]`` from w2c pose rows ``[..., 7]`` = ``[t, q]``."""
    poses = _as_float(poses)
    out = np.empty(poses.shape[:-1] + (3, 4))
    out[..., :3, :3] = quat_to_matrix(poses[..., 3:7])
    out[..., :3, 3] = poses[..., :3]
    return out


def w2c_to_poses7(w2c: ArrayLike) -> Array:
    """w2c pose rows ``[..., 7]`` = ``[tx, ty, tz, qx, qy, qz, qw]`` from w2c ``[..., 3|4, 4]``."""
    w2c = _as_float(w2c)
    return np.concatenate([w2c[..., :3, 3], matrix_to_quat(w2c[..., :3, :3])], axis=-1)


def invert_extrinsics(T: ArrayLike) -> Array:
    """Invert rigid transforms ``[..., 3|4, 4]``: w2c -> c2w or c2w -> w2c; returns ``[..., 3, 4]``.

    ``[R | t]^-1 = [R.T | -R.T t]``.
    """
    T = _as_float(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.empty(T.shape[:-2] + (3, 4))
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    return out


def w2c_to_c2w(w2c: ArrayLike) -> Array:
    """c2w ``[..., 3, 4]`` from w2c ``[..., 3|4, 4]`` (see :func:`invert_extrinsics`)."""
    return invert_extrinsics(w2c)


def c2w_to_w2c(c2w: ArrayLike) -> Array:
    """w2c ``[..., 3, 4]`` from c2w ``[..., 3|4, 4]`` (see :func:`invert_extrinsics`)."""
    return invert_extrinsics(c2w)


def poses7_to_c2w(poses: ArrayLike) -> Array:
    """c2w matrices ``[..., 3, 4]`` (the released ``extrinsics.npy``) from w2c pose rows ``[..., 7]``."""
    return invert_extrinsics(poses7_to_w2c(poses))


def c2w_to_poses7(c2w: ArrayLike) -> Array:
    """w2c pose rows ``[..., 7]`` (the released ``poses.npy``) from c2w ``[..., 3|4, 4]``."""
    return w2c_to_poses7(invert_extrinsics(c2w))


def poses7_from_c2w(R_c2w: ArrayLike, centers: ArrayLike) -> Array:
    """w2c pose rows ``[..., 7]`` from c2w rotations ``[..., 3, 3]`` and camera centres ``[..., 3]``.

    The natural way to build a trajectory: where the camera is (``centers``, world
    frame) and how it is oriented (``R_c2w`` maps camera axes, OpenCV x right / y down /
    z forward, into the world).
    """
    R_c2w = _as_float(R_c2w)
    centers = _as_float(centers)
    c2w = np.concatenate([R_c2w, centers[..., None]], axis=-1)
    return c2w_to_poses7(c2w)


def camera_centers(poses: ArrayLike) -> Array:
    """Camera centres ``c = -R.T @ t`` ``[..., 3]`` (world frame) from w2c pose rows ``[..., 7]``."""
    poses = _as_float(poses)
    q = quat_normalize(poses[..., 3:7])
    return -quat_rotate(quat_conjugate(q), poses[..., :3])


def camera_forward(poses: ArrayLike) -> Array:
    """Viewing directions ``R.T @ [0, 0, 1]`` ``[..., 3]`` (world frame) from w2c pose rows ``[..., 7]``."""
    poses = _as_float(poses)
    q = quat_normalize(poses[..., 3:7])
    z = np.zeros(q.shape[:-1] + (3,))
    z[..., 2] = 1.0
    return quat_rotate(quat_conjugate(q), z)


# --------------------------------------------------------------------------- intrinsics
def normalize_intrinsics(K: ArrayLike) -> Array:
    """Released form ``[fx/(2cx), fy/(2cy), 0.5, 0.5]`` ``[..., 4]`` from pixel ``[fx, fy, cx, cy]``.

    As the reference's ``normalize_intrinsics.py``: the focal lengths are divided by
    twice the principal point (the image size when the principal point is centred).
    """
    K = _as_float(K)
    out = np.empty(K.shape[:-1] + (4,))
    out[..., 0] = K[..., 0] / (2.0 * K[..., 2])
    out[..., 1] = K[..., 1] / (2.0 * K[..., 3])
    out[..., 2:] = 0.5
    return out


def denormalize_intrinsics(K_norm: ArrayLike, width: float, height: float) -> Array:
    """Pixel ``[fx, fy, cx, cy]`` ``[..., 4]`` at ``width x height`` from released normalised intrinsics."""
    K_norm = _as_float(K_norm)
    return K_norm * np.array([width, height, width, height], dtype=np.float64)


def intrinsics_matrix(K: ArrayLike) -> Array:
    """3 x 3 camera matrices ``[..., 3, 3]`` from ``[fx, fy, cx, cy]`` ``[..., 4]`` (pixel or normalised)."""
    K = _as_float(K)
    out = np.zeros(K.shape[:-1] + (3, 3))
    out[..., 0, 0] = K[..., 0]
    out[..., 1, 1] = K[..., 1]
    out[..., 0, 2] = K[..., 2]
    out[..., 1, 2] = K[..., 3]
    out[..., 2, 2] = 1.0
    return out
