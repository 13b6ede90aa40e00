"""Trajectory metrics (SPEC.md §3) on analytic trajectories with known answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation

from spatialvid.processors.geometry.metrics import (
    MetricsConfig,
    TrajectoryMetrics,
    dynamic_ratio,
    trajectory_metrics,
    trajectory_metrics_batch,
)
from spatialvid.processors.geometry.poses import poses7_from_c2w

T = 75
BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_trajectory.py"


def still_rotation(n: int) -> np.ndarray:
    return np.broadcast_to(np.eye(3), (n, 3, 3))


def heading_rotation(yaw: np.ndarray) -> np.ndarray:
    """c2w rotations turning about the world y axis: forward = (sin yaw, 0, cos yaw)."""
    return Rotation.from_rotvec(np.outer(yaw, [0.0, 1.0, 0.0])).as_matrix()


def straight(length: float, n: int = T) -> np.ndarray:
    c = np.zeros((n, 3))
    c[:, 2] = np.linspace(0.0, length, n)
    return poses7_from_c2w(still_rotation(n), c)


def circle_arc(radius: float, angle: float, n: int = T) -> np.ndarray:
    """Walk along a circle of ``radius`` over ``angle``, looking along the path."""
    th = np.linspace(0.0, angle, n)
    c = np.stack([radius * (1 - np.cos(th)), np.zeros(n), radius * np.sin(th)], axis=1)
    return poses7_from_c2w(heading_rotation(th), c)


def s_curve(n: int = T) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    c = np.stack([0.3 * np.sin(2 * np.pi * x), np.zeros(n), 2.0 * x], axis=1)
    return poses7_from_c2w(still_rotation(n), c)


def test_circle_move_dist_is_r_times_angle():
    for r, a in ((1.0, math.pi / 2), (2.5, math.pi), (0.4, 2 * math.pi / 3)):
        m = trajectory_metrics(circle_arc(r, a))
        chord_sum = 2 * r * (T - 1) * math.sin(a / (2 * (T - 1)))  # exact for the sampled arc
        assert m.move_dist == pytest.approx(chord_sum, rel=1e-9), f"circle r={r} a={a}: moveDist {m.move_dist}"
        assert m.move_dist == pytest.approx(r * a, rel=1e-3), f"circle r={r} a={a}: moveDist {m.move_dist} != r*a"
        assert m.rot_angle == pytest.approx(a, rel=1e-9), f"circle r={r} a={a}: rotAngle {m.rot_angle} != {a}"
        assert not m.anomaly, f"circle r={r} a={a}: a smooth arc is not an anomaly"


def test_circle_arcs_turn_once():
    # The turn angle on an arc is constant (a/2): one turn when a/2 > 0.45 rad, none below.
    assert trajectory_metrics(circle_arc(2.0, math.pi / 2)).traj_turns == 1, "quarter circle: one turn"
    assert trajectory_metrics(circle_arc(2.0, math.pi)).traj_turns == 1, "half circle: one turn"
    assert trajectory_metrics(circle_arc(2.0, 0.5)).traj_turns == 0, "gentle arc (a/2 = 0.25 rad): no turn"


def test_straight_path_has_no_turns_and_levels_follow_length():
    for length, level in ((0.05, 0), (0.08, 1), (0.1, 1), (0.5, 2), (1.0, 3), (3.0, 4)):
        m = trajectory_metrics(straight(length))
        assert m.traj_turns == 0, f"straight {length}: turns {m.traj_turns}, expected 0"
        assert m.move_dist == pytest.approx(length), f"straight {length}: moveDist {m.move_dist}"
        assert m.dist_level == level, f"straight {length}: distLevel {m.dist_level}, expected {level}"
        assert m.rot_angle == 0.0, f"straight {length}: rotAngle {m.rot_angle}, expected 0"


def test_s_curve_has_two_turns():
    m = trajectory_metrics(s_curve())
    assert m.traj_turns == 2, f"S-curve: turns {m.traj_turns}, expected 2"
    assert not m.anomaly


def test_injected_jump_is_an_anomaly():
    poses = straight(2.0)
    assert not trajectory_metrics(poses).anomaly, "smooth straight walk must not be an anomaly"
    jumped = poses.copy()
    jumped[40:, 0] -= 0.5  # w2c x translation: the camera centre jumps 0.5 sideways at frame 40
    assert trajectory_metrics(jumped).anomaly, "a 0.5 jump in the camera position must be an anomaly"


def test_anomaly_needs_two_bad_steps_in_a_row():
    """A kink from velocity u to w gives prediction errors |w-u| then |w-u|/2: two bad steps
    only when |w-u|/2 > 0.03."""
    for dv, expected in ((0.05, False), (0.07, True)):
        v = np.zeros((T, 3))
        v[:, 2] = 0.02
        v[30:, 0] = dv  # sideways velocity appears at frame 30
        c = np.cumsum(v, axis=0)
        m = trajectory_metrics(poses7_from_c2w(still_rotation(T), c))
        assert m.anomaly is expected, f"kink of {dv}/frame: anomaly {m.anomaly}, expected {expected}"


def test_too_few_poses_is_an_anomaly():
    assert trajectory_metrics(straight(0.1, n=3)).anomaly, "3 poses cannot be checked: anomaly"
    assert not trajectory_metrics(straight(0.1, n=4)).anomaly, "4 evenly spaced poses are fine"


def test_move_dist_uses_camera_centres_not_w2c_translation():
    """A camera panning in place at (3, 0, 4): it does not move (SPEC.md §3 fix); the
    reference's w2c translation swings around and reported a distance."""
    yaw = np.linspace(0.0, math.pi / 2, T)
    poses = poses7_from_c2w(heading_rotation(yaw), np.tile([3.0, 0.0, 4.0], (T, 1)))
    m = trajectory_metrics(poses)
    assert m.move_dist == pytest.approx(0.0, abs=1e-9), f"pan in place: moveDist {m.move_dist}, expected 0"
    assert m.rot_angle == pytest.approx(math.pi / 2), f"pan in place: rotAngle {m.rot_angle}"
    ref = trajectory_metrics(poses, positions="translation")
    assert ref.move_dist > 1.0, f"reference mode should reproduce the defect, got {ref.move_dist}"


def test_rot_angle_ignores_quaternion_sign_flips():
    poses = circle_arc(1.0, 1.0)
    flipped = poses.copy()
    flipped[::2, 3:] *= -1  # same rotations, other cover
    a = trajectory_metrics(poses).rot_angle
    b = trajectory_metrics(flipped).rot_angle
    assert b == pytest.approx(a), f"rotAngle changed with quaternion signs: {a} vs {b}"


def test_metrics_record_types_and_release_names():
    m = trajectory_metrics(circle_arc(1.0, 1.0))
    assert isinstance(m, TrajectoryMetrics)
    assert isinstance(m.anomaly, bool) and isinstance(m.dist_level, int) and isinstance(m.traj_turns, int)
    assert isinstance(m.move_dist, float) and isinstance(m.rot_angle, float)
    assert list(m.as_release_dict()) == ["anomaly", "moveDist", "distLevel", "rotAngle", "trajTurns"]
    assert list(m.as_dict()) == ["anomaly", "move_dist", "dist_level", "rot_angle", "traj_turns"]


def test_config_changes_thresholds():
    m = trajectory_metrics(straight(0.5), MetricsConfig(dist_levels=(0.1, 0.2, 0.3, 0.4)))
    assert m.dist_level == 4, f"custom levels: distLevel {m.dist_level}, expected 4"


def test_batch_matches_single_and_the_per_frame_implementation():
    spec = importlib.util.spec_from_file_location("bench_trajectory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    poses = bench.make_trajectories(40, T, seed=3, jump_fraction=0.2)
    batch = trajectory_metrics_batch(poses)
    for b in range(len(poses)):
        single = trajectory_metrics(poses[b])
        assert batch[b] == single, f"trajectory {b}: batch {batch[b]} != single {single}"
        loop = bench.loop_metrics(poses[b])
        assert single.anomaly == loop["anomaly"], f"trajectory {b}: anomaly {single.anomaly} vs loop {loop}"
        assert single.traj_turns == loop["traj_turns"], f"trajectory {b}: turns {single.traj_turns} vs loop {loop}"
        assert single.dist_level == loop["dist_level"], f"trajectory {b}: distLevel vs loop {loop}"
        assert single.move_dist == pytest.approx(loop["move_dist"], rel=1e-9)
        assert single.rot_angle == pytest.approx(loop["rot_angle"], rel=1e-9)
    assert batch.anomaly.any() and (~batch.anomaly).any(), "the sample should hold both kinds"


def test_dynamic_ratio_uses_every_fifth_mask():
    masks = np.ones((11, 4, 8), dtype=bool)  # every frame fully dynamic ...
    masks[::5] = False
    masks[::5, :1, :] = True  # ... except frames 0, 5, 10: a quarter of the pixels
    assert dynamic_ratio(masks) == pytest.approx(0.25), f"dense masks: {dynamic_ratio(masks)}, expected 0.25"
    sparse = [csr_matrix(m) for m in masks]
    assert dynamic_ratio(sparse) == pytest.approx(0.25), "CSR masks must give the same ratio"
    assert dynamic_ratio(np.zeros((0, 4, 8), dtype=bool)) == 0.0
