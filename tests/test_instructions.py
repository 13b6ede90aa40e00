"""Motion instructions (SPEC.md §4) on analytic trajectories.

Trajectories are built from what a viewer of the clip sees: "forward" is along the
camera's own viewing direction, "left" is the camera's left, "up" is opposite to the
image's down, and each construction is checked against that description before the
instructions are. The camera starts in an arbitrary world orientation, so nothing
depends on the world frame.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spatialvid.processors.geometry.instructions import (
    COMMANDS,
    EnhancedInstructionConfig,
    euler_yxz,
    instruction_summary,
    merge_ranges,
    motion_instructions,
    motion_instructions_batch,
    vote_commands,
)
from spatialvid.processors.geometry.poses import poses7_from_c2w

T = 75
START = Rotation.from_euler("zxy", [12.0, -20.0, 35.0], degrees=True).as_matrix()  # any world orientation
C0 = np.array([0.7, -0.3, 1.9])
BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_trajectory.py"
WARMUP_MAX = 6  # the EMA starts at rest: a few leading steps may be Stay


def move(direction_cam: list[float], speed: float = 0.05, n: int = T) -> np.ndarray:
    """Translate along a direction given in the camera's own axes (x right, y down, z ahead)."""
    d = START @ np.asarray(direction_cam, dtype=float)
    c = C0 + np.outer(np.arange(n) * speed, d)
    return poses7_from_c2w(np.broadcast_to(START, (n, 3, 3)), c)


def turn(axis_cam: list[float], deg_per_frame: float = 2.0, n: int = T) -> np.ndarray:
    """Rotate in place about an axis given in the camera's own axes (right-hand rule)."""
    rel = Rotation.from_rotvec(np.outer(np.deg2rad(deg_per_frame) * np.arange(n), axis_cam)).as_matrix()
    return poses7_from_c2w(START @ rel, np.tile(C0, (n, 1)))


def seen_from_first_camera(poses: np.ndarray, cam_axis: int) -> np.ndarray:
    """Direction of the last camera's axis (0 right, 1 down, 2 ahead) in the FIRST camera's axes."""
    from spatialvid.processors.geometry.poses import poses7_to_c2w

    R_last = poses7_to_c2w(poses[-1])[:, :3]
    return START.T @ R_last[:, cam_axis]


def first_centre_offset(poses: np.ndarray) -> np.ndarray:
    """Displacement of the camera from the first to the last frame, in the first camera's axes."""
    from spatialvid.processors.geometry.poses import camera_centers

    c = camera_centers(poses)
    return START.T @ (c[-1] - c[0])


def assert_throughout(name: str, ins: dict[str, list[str]], expected: list[str], end: int = T - 1) -> None:
    ranges = sorted(((int(k.split("->")[0]), int(k.split("->")[1]), v) for k, v in ins.items()))
    assert ranges, f"{name}: no instructions"
    assert ranges[0][0] == 0 and ranges[-1][1] == end, f"{name}: ranges {ins} do not cover 0->{end}"
    for (_, b0, _), (a1, _, _) in zip(ranges, ranges[1:], strict=False):
        assert b0 == a1, f"{name}: gap or overlap between ranges in {ins}"
    for i, (a, b, cmds) in enumerate(ranges):
        if cmds == ["Stay"] and i == 0 and b <= WARMUP_MAX:
            continue  # EMA warm-up at the start
        assert cmds == expected, f"{name}: range {a}->{b} is {cmds}, expected {expected} (all: {ins})"


# (name, trajectory, expected command, viewer-side check of the construction)
CASES = [
    ("forward", lambda: move([0, 0, 1]), "Dolly In", lambda p: first_centre_offset(p)[2] > 0),
    ("backward", lambda: move([0, 0, -1]), "Dolly Out", lambda p: first_centre_offset(p)[2] < 0),
    ("to the right", lambda: move([1, 0, 0]), "Truck Right", lambda p: first_centre_offset(p)[0] > 0),
    ("to the left", lambda: move([-1, 0, 0]), "Truck Left", lambda p: first_centre_offset(p)[0] < 0),
    ("upward", lambda: move([0, -1, 0]), "Pedestal Up", lambda p: first_centre_offset(p)[1] < 0),
    ("downward", lambda: move([0, 1, 0]), "Pedestal Down", lambda p: first_centre_offset(p)[1] > 0),
    # turning left: the view direction swings toward the camera's left (-x)
    ("turning left", lambda: turn([0, -1, 0]), "Pan Left", lambda p: seen_from_first_camera(p, 2)[0] < 0),
    ("turning right", lambda: turn([0, 1, 0]), "Pan Right", lambda p: seen_from_first_camera(p, 2)[0] > 0),
    # tilting up: the view direction swings toward the image's top (-y)
    ("tilting up", lambda: turn([1, 0, 0]), "Tilt Up", lambda p: seen_from_first_camera(p, 2)[1] < 0),
    ("tilting down", lambda: turn([-1, 0, 0]), "Tilt Down", lambda p: seen_from_first_camera(p, 2)[1] > 0),
    # rolling clockwise seen from behind the camera: its top (-y) swings to the right (+x)
    ("rolling clockwise", lambda: turn([0, 0, 1]), "Roll CW", lambda p: -seen_from_first_camera(p, 1)[0] > 0),
    ("rolling counter-clockwise", lambda: turn([0, 0, -1]), "Roll CCW", lambda p: -seen_from_first_camera(p, 1)[0] < 0),
]


@pytest.mark.parametrize("name,make,expected,viewer_check", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("method", ["enhanced", "basic"])
def test_single_motion_gives_its_command_throughout(name, make, expected, viewer_check, method):
    poses = make()
    assert viewer_check(poses), f"{name}: the test trajectory does not do what its name says"
    ins = motion_instructions(poses, method)
    end = T - 1 if method == "enhanced" else 2 * ((T - 1) // 2)
    assert_throughout(f"{name} ({method})", ins, [expected], end=end)


@pytest.mark.parametrize("method", ["enhanced", "basic"])
def test_still_camera_stays(method):
    poses = poses7_from_c2w(np.broadcast_to(START, (T, 3, 3)), np.tile(C0, (T, 1)))
    ins = motion_instructions(poses, method)
    assert ins == {"0->74": ["Stay"]}, f"still camera ({method}): {ins}"


@pytest.mark.parametrize("method", ["enhanced", "basic"])
def test_jitter_below_thresholds_stays(method):
    rng = np.random.default_rng(11)
    jitter_rot = Rotation.from_rotvec(rng.normal(0, np.deg2rad(0.05), (T, 3))).as_matrix()
    c = C0 + rng.normal(0, 0.001, (T, 3))
    poses = poses7_from_c2w(START @ jitter_rot, c)
    ins = motion_instructions(poses, method)
    assert ins == {"0->74": ["Stay"]}, f"jitter of 1 mm / 0.05 deg ({method}): {ins}"


def test_walk_while_turning_left_gives_both_in_vocabulary_order():
    yaw = np.deg2rad(1.5) * np.arange(T)
    R = START @ Rotation.from_rotvec(np.outer(yaw, [0, -1, 0])).as_matrix()  # turning left
    c = C0 + np.cumsum(0.05 * R[:, :, 2], axis=0)  # stepping along the current view direction
    poses = poses7_from_c2w(R, c)
    ins = motion_instructions(poses)
    for key, cmds in ins.items():
        start = int(key.split("->")[0])
        if start < WARMUP_MAX:  # warm-up: the turn may show before the dolly
            assert set(cmds) <= {"Stay", "Dolly In", "Pan Left"}, f"walk + turn left, warm-up {key}: {cmds}"
        else:
            assert cmds == ["Dolly In", "Pan Left"], f"walk + turn left, {key}: {cmds} (all: {ins})"
    assert len(ins) <= 3, f"walk + turn left should merge into few ranges: {ins}"


def test_euler_yxz_matches_scipy_and_sign_meaning():
    rot = Rotation.random(200, random_state=5)
    assert np.allclose(euler_yxz(rot.as_quat()), rot.as_euler("yxz"), atol=1e-9)
    # w2c relative rotation of a camera that turned left (c2w about camera -y): positive yaw
    c2w_step = Rotation.from_rotvec([0, -0.1, 0])
    yaw = euler_yxz(c2w_step.inv().as_quat())[0]
    assert yaw > 0, f"turn-left step has w2c yaw {yaw}, expected > 0 (Pan Left)"


def test_enhanced_equals_per_frame_implementation():
    """The vectorised voting gives exactly what a pair-by-pair, vote-by-vote loop gives."""
    spec = importlib.util.spec_from_file_location("bench_trajectory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    poses = bench.make_trajectories(12, T, seed=21)
    batch = motion_instructions_batch(poses)
    for b in range(len(poses)):
        want = bench.loop_enhanced_instructions(poses[b], bench.loop_metrics(poses[b])["move_dist"])
        assert batch[b] == want, f"random trajectory {b}: vectorised {batch[b]} != loop {want}"
    for n in (1, 2, 3, 5, 6, 9):
        short = poses[:2, :n]
        got = motion_instructions_batch(short)
        for b in range(2):
            want = bench.loop_enhanced_instructions(short[b], bench.loop_metrics(short[b])["move_dist"])
            assert got[b] == want, f"{n} poses, trajectory {b}: vectorised {got[b]} != loop {want}"


def test_voting_rules_equal_the_per_frame_vote_on_dense_random_votes():
    """Random per-pair commands with many conflicts and ties: the vectorised vote (conflicts,
    3x dominance, >= 50 %, at most 4, at least 2, Stay last) equals the vote-by-vote loop."""
    spec = importlib.util.spec_from_file_location("bench_trajectory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(5)
    grid = [(iv, a) for iv in (1, 3, 5) for a in (0.03, 0.05, 0.1)]
    B, n_poses = 40, 30
    segments = []
    for iv, _ in grid:
        stride = int(np.sqrt(iv) + 1)
        K = len(range(0, n_poses - iv, stride))
        signs = rng.choice([-1, 0, 0, 1], size=(B, K, 6)).astype(np.int8)
        signs[rng.random((B, K)) < 0.2] = 0  # some pairs vote Stay
        segments.append((iv, stride, signs))
    got = merge_ranges(vote_commands(segments))
    names = [("Dolly In", "Dolly Out"), ("Truck Right", "Truck Left"), ("Pedestal Down", "Pedestal Up"),
             ("Pan Left", "Pan Right"), ("Tilt Down", "Tilt Up"), ("Roll CCW", "Roll CW")]
    for b in range(B):
        results = [
            [[names[a][0 if s > 0 else 1] for a, s in enumerate(row) if s != 0] or ["Stay"] for row in sg[b]]
            for _, _, sg in segments
        ]
        want = bench.loop_merge(bench.loop_vote(results, grid))
        assert got[b] == want, f"random votes {b}: vectorised {got[b]} != loop {want}"


def test_batch_equals_single_and_output_is_json():
    poses = np.stack([move([0, 0, 1]), turn([0, -1, 0]), move([1, 0, 0])])
    batch = motion_instructions_batch(poses)
    for b in range(3):
        assert batch[b] == motion_instructions(poses[b]), f"trajectory {b}: batch differs from single"
    text = json.dumps(batch[0])
    assert json.loads(text) == batch[0]
    assert all(cmd in COMMANDS for ins in batch for cmds in ins.values() for cmd in cmds)


def test_too_few_poses_give_no_instructions():
    assert motion_instructions(move([0, 0, 1], n=1)) == {}
    assert motion_instructions(move([0, 0, 1], n=1), "basic") == {}


def test_enhanced_config_is_used():
    poses = move([0, 0, 1], speed=0.002)
    assert_throughout("slow forward", motion_instructions(poses), ["Stay"])  # below the 0.01 floor
    low = EnhancedInstructionConfig(min_translation_threshold=0.0005)
    ins = motion_instructions(poses, config=low)
    assert "Dolly In" in instruction_summary(ins), f"lower floor should see the dolly: {ins}"


def test_instruction_summary_counts_pose_steps():
    assert instruction_summary({"0->3": ["Stay"], "3->10": ["Dolly In", "Pan Left"]}) == {
        "Stay": 3,
        "Dolly In": 7,
        "Pan Left": 7,
    }


def test_render_trajectory_png(tmp_path):
    pytest.importorskip("matplotlib")
    from spatialvid.processors.geometry.plot import render_trajectory

    poses = move([0, 0, 1])
    out = render_trajectory(poses, motion_instructions(poses), tmp_path / "show" / "clip.png", title="forward")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"not a PNG: {out} ({len(data)} bytes)"
