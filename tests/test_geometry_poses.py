"""Pose conventions (processors/geometry/poses.py): w2c rows [t, qx, qy, qz, qw], c2w,
camera centres, OpenCV axes, normalised intrinsics. Checked against SciPy and against
what a camera sees, not against the code itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spatialvid.processors.geometry.poses import (
    c2w_to_poses7,
    camera_centers,
    camera_forward,
    denormalize_intrinsics,
    intrinsics_matrix,
    invert_extrinsics,
    matrix_to_quat,
    normalize_intrinsics,
    poses7_from_c2w,
    poses7_to_c2w,
    poses7_to_w2c,
    quat_angle,
    quat_multiply,
    quat_rotate,
    quat_to_matrix,
    w2c_to_poses7,
)

RNG = np.random.default_rng(7)


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    rot = Rotation.random(n, random_state=seed)
    t = np.random.default_rng(seed).normal(size=(n, 3))
    return np.concatenate([t, rot.as_quat()], axis=1)


def test_quaternion_order_is_scalar_last_like_scipy():
    q = Rotation.random(50, random_state=1).as_quat()  # SciPy: [x, y, z, w]
    got = quat_to_matrix(q)
    want = Rotation.from_quat(q).as_matrix()
    assert np.allclose(got, want, atol=1e-12), "quat_to_matrix must read [qx, qy, qz, qw] (SciPy's order)"
    identity = quat_to_matrix([0.0, 0.0, 0.0, 1.0])
    assert np.allclose(identity, np.eye(3)), f"[0,0,0,1] must be the identity, got {identity}"


def test_quaternion_product_and_rotation_match_scipy():
    a = Rotation.random(20, random_state=2)
    b = Rotation.random(20, random_state=3)
    prod = quat_multiply(a.as_quat(), b.as_quat())
    assert np.allclose(quat_to_matrix(prod), (a * b).as_matrix(), atol=1e-12), "a*b must apply b first, then a"
    v = RNG.normal(size=(20, 3))
    assert np.allclose(quat_rotate(a.as_quat(), v), a.apply(v), atol=1e-12), "quat_rotate must equal R @ v"


def test_matrix_to_quat_round_trip_and_canonical_sign():
    rot = Rotation.random(30, random_state=4)
    q = matrix_to_quat(rot.as_matrix())
    assert (q[:, 3] >= 0).all(), "quaternions are written with qw >= 0"
    assert np.allclose(quat_to_matrix(q), rot.as_matrix(), atol=1e-12)


def test_w2c_c2w_round_trip():
    poses = random_poses(40)
    w2c = poses7_to_w2c(poses)
    c2w = poses7_to_c2w(poses)
    back = c2w_to_poses7(c2w)
    assert np.allclose(poses7_to_w2c(back), w2c, atol=1e-12), "poses7 -> c2w -> poses7 changed the pose"
    assert np.allclose(invert_extrinsics(invert_extrinsics(w2c)), w2c, atol=1e-12), "inverting twice is not identity"
    again = w2c_to_poses7(w2c)
    assert np.allclose(again[:, :3], poses[:, :3]), "w2c -> poses7 changed the translation"
    same_rotation = np.isclose(np.abs(np.sum(again[:, 3:] * poses[:, 3:], axis=1)), 1.0)
    assert same_rotation.all(), "w2c -> poses7 changed the rotation (up to the sign of q)"
    # c2w composed with w2c is the identity transform
    for i in range(5):
        T_w2c = np.vstack([w2c[i], [0, 0, 0, 1]])
        T_c2w = np.vstack([c2w[i], [0, 0, 0, 1]])
        assert np.allclose(T_c2w @ T_w2c, np.eye(4), atol=1e-12), f"pose {i}: c2w @ w2c is not identity"


def test_batched_shapes():
    poses = random_poses(24).reshape(4, 6, 7)
    assert poses7_to_w2c(poses).shape == (4, 6, 3, 4)
    assert poses7_to_c2w(poses).shape == (4, 6, 3, 4)
    assert camera_centers(poses).shape == (4, 6, 3)
    assert np.allclose(camera_centers(poses).reshape(24, 3), camera_centers(poses.reshape(24, 7)))


def test_camera_centre_is_minus_rt_t_and_maps_to_origin():
    poses = random_poses(10, seed=5)
    R = Rotation.from_quat(poses[:, 3:]).as_matrix()
    t = poses[:, :3]
    c = camera_centers(poses)
    want = -np.einsum("nji,nj->ni", R, t)
    assert np.allclose(c, want, atol=1e-12), "camera centre must be -R.T @ t"
    in_cam = np.einsum("nij,nj->ni", R, c) + t
    assert np.allclose(in_cam, 0, atol=1e-12), "the camera centre must map to the camera origin"
    assert not np.allclose(c, t), "w2c translation is not the camera position once rotated"


def test_opencv_axes_right_down_forward():
    """A camera at c with c2w rotation R: the point in front of it has camera z > 0, the
    point to its right x > 0, the point below it y > 0 (OpenCV: x right, y down, z forward)."""
    R_c2w = Rotation.from_euler("xyz", [10, 40, -5], degrees=True).as_matrix()
    c = np.array([1.0, -2.0, 3.0])
    pose = poses7_from_c2w(R_c2w, c)
    w2c = poses7_to_w2c(pose)
    right, down, ahead = R_c2w[:, 0], R_c2w[:, 1], R_c2w[:, 2]
    for name, world_dir, axis in (("right", right, 0), ("below", down, 1), ("ahead", ahead, 2)):
        p_cam = w2c[:, :3] @ (c + 2.0 * world_dir) + w2c[:, 3]
        assert p_cam[axis] == pytest.approx(2.0), f"a point {name} of the camera: camera coords {p_cam}"
    assert np.allclose(camera_forward(pose), ahead), "camera_forward must be the c2w z axis"
    assert np.allclose(camera_centers(pose), c), "poses7_from_c2w must keep the camera centre"


def test_quat_angle_small_angles_and_double_cover():
    a = Rotation.random(10, random_state=8)
    for angle in (1e-7, 1e-3, 0.5, 3.0):
        step = Rotation.from_rotvec(np.tile([0.0, angle, 0.0], (10, 1)))
        b = step * a
        got = quat_angle(a.as_quat(), b.as_quat())
        assert np.allclose(got, angle, rtol=1e-6, atol=1e-12), f"angle {angle}: got {got}"
        flipped = quat_angle(a.as_quat(), -b.as_quat())
        assert np.allclose(flipped, angle, rtol=1e-6, atol=1e-12), f"q and -q must give one angle ({angle})"


def test_normalised_intrinsics():
    # 1920 x 1080, centred principal point, fx = fy = 1000 px
    K = np.array([[1000.0, 1000.0, 960.0, 540.0]])
    norm = normalize_intrinsics(K)
    assert np.allclose(norm, [[1000 / 1920, 1000 / 1080, 0.5, 0.5]]), f"normalised form wrong: {norm}"
    assert np.allclose(denormalize_intrinsics(norm, 1920, 1080), K), "round trip to pixels at 1920x1080"
    half = denormalize_intrinsics(norm, 960, 540)
    assert np.allclose(half, K / 2), f"at half resolution the pixel intrinsics halve, got {half}"
    M = intrinsics_matrix(K)[0]
    assert np.allclose(M, [[1000, 0, 960], [0, 1000, 540], [0, 0, 1]])
