"""Benchmark: trajectory metrics + enhanced motion instructions (issue 5).

Throughput (trajectories per second) of the vectorised library on N random smooth
trajectories of 75 poses, against a straightforward per-frame Python implementation of
the same algorithm (the reference's loops: one pose, one pair, one vote at a time),
run in the same process on a subset and checked to give identical results.

    .venv/bin/python bench/bench_trajectory.py            # 100,000 trajectories
    .venv/bin/python bench/bench_trajectory.py --n 5000   # quicker

The per-frame functions here (``loop_metrics``, ``loop_enhanced_instructions``) are
also what ``tests/test_instructions.py`` compares the vectorised code with.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks
from scipy.spatial.transform import Rotation

# --------------------------------------------------------------------------- data
def make_trajectories(n: int, length: int = 75, seed: int = 0, jump_fraction: float = 0.02) -> np.ndarray:
    """``n`` random smooth camera trajectories as w2c pose rows ``(n, length, 7)``.

    Smoothly varying velocity (up to a few cm per frame) and angular velocity (up to a
    few degrees per frame), small jitter, and a jump in ``jump_fraction`` of them.
    """
    rng = np.random.default_rng(seed)
    speed = rng.uniform(0.0, 0.06, (n, 1, 1))
    v0 = rng.normal(size=(n, 1, 3))
    v0 /= np.linalg.norm(v0, axis=-1, keepdims=True)
    vel = speed * v0 + np.cumsum(rng.normal(0, 0.002, (n, length, 3)), axis=1)
    centers = np.cumsum(vel, axis=1) + rng.normal(0, 0.001, (n, length, 3))
    jumpers = rng.random(n) < jump_fraction
    at = rng.integers(5, length - 5, n)
    for b in np.flatnonzero(jumpers):
        centers[b, at[b] :] += rng.normal(0, 0.3, 3)
    rate = rng.normal(0, np.deg2rad(1.5), (n, 1, 3)) + np.cumsum(rng.normal(0, np.deg2rad(0.1), (n, length, 3)), axis=1)
    q = np.zeros((n, length, 4))
    q[:, 0, 3] = 1.0
    for t in range(1, length):  # integrate body rates (data generation only)
        dq = Rotation.from_rotvec(rate[:, t]).as_quat()
        q[:, t] = (Rotation.from_quat(q[:, t - 1]) * Rotation.from_quat(dq)).as_quat()
    r_w2c = Rotation.from_quat(q.reshape(-1, 4)).inv()
    t_w2c = -r_w2c.apply(centers.reshape(-1, 3))
    return np.concatenate([t_w2c, r_w2c.as_quat()], axis=-1).reshape(n, length, 7)


# --------------------------------------------------------------------------- per-frame baseline
def _center(row: np.ndarray) -> np.ndarray:
    rot = Rotation.from_quat(row[3:7])
    return -rot.inv().apply(row[:3])


def loop_metrics(poses: np.ndarray) -> dict:
    """Metrics of one trajectory, one frame at a time (camera centres, as the library)."""
    T = len(poses)
    pos = [_center(poses[i]) for i in range(T)]
    # anomaly
    anomaly = T < 4
    bad_run = 0
    for t in range(T - 3):
        v1 = pos[t + 2] - pos[t + 1]
        v2 = pos[t + 1] - pos[t]
        pred = pos[t + 2] + v1 + 0.5 * (v1 - v2)
        if np.sqrt(np.sum((pred - pos[t + 3]) ** 2)) > 0.03:
            bad_run += 1
            if bad_run >= 2:
                anomaly = True
                break
        else:
            bad_run = 0
    # moveDist, distLevel
    dist = 0.0
    for i in range(T - 1):
        dist += float(np.linalg.norm(pos[i + 1] - pos[i]))
    level = sum(dist >= b for b in (0.08, 0.28, 0.92, 2.41))
    # rotAngle (geodesic)
    rot = 0.0
    for i in range(T - 1):
        q1 = poses[i, 3:7] / np.linalg.norm(poses[i, 3:7])
        q2 = poses[i + 1, 3:7] / np.linalg.norm(poses[i + 1, 3:7])
        x1, y1, z1, w1 = -q1[0], -q1[1], -q1[2], q1[3]
        x2, y2, z2, w2 = q2
        rel = np.array(
            [
                w2 * x1 + x2 * w1 + y2 * z1 - z2 * y1,
                w2 * y1 - x2 * z1 + y2 * w1 + z2 * x1,
                w2 * z1 + x2 * y1 - y2 * x1 + z2 * w1,
                w2 * w1 - x2 * x1 - y2 * y1 - z2 * z1,
            ]
        )
        rot += 2.0 * math.atan2(float(np.linalg.norm(rel[:3])), abs(float(rel[3])))
    # trajTurns
    turns = 0
    if T >= 3:
        angles = []
        for t in range(1, T - 1):
            v1 = pos[t] - pos[0]
            v2 = pos[T - 1] - pos[t]
            n1, n2 = np.linalg.norm(v1), np.linalg.norm(v2)
            if n1 < 1e-8 or n2 < 1e-8:
                continue
            angles.append(math.acos(min(max(float(np.dot(v1, v2) / (n1 * n2)), -1.0), 1.0)))
        if angles:
            sm = np.round(gaussian_filter1d(np.array(angles), sigma=5, mode="reflect"), 9)
            peaks, _ = find_peaks(sm, height=0.45, distance=5)
            values = [sm[i] for i in peaks]
            top = max(sm)
            turns = len(values) + int(top > 0.45 and top not in values)
    return {"anomaly": bool(anomaly), "move_dist": dist, "dist_level": int(level), "rot_angle": rot, "traj_turns": turns}


def _loop_filter(poses: np.ndarray, alpha: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pos = [_center(poses[0])]
    quats = [poses[0, 3:7] / np.linalg.norm(poses[0, 3:7])]
    for i in range(1, len(poses)):
        pos.append(alpha * _center(poses[i]) + (1 - alpha) * pos[-1])
        cur = poses[i, 3:7] / np.linalg.norm(poses[i, 3:7])
        if np.dot(quats[-1], cur) < 0:
            cur = -cur
        mix = (1 - alpha) * quats[-1] + alpha * cur
        quats.append(mix / np.linalg.norm(mix))
    return pos, quats


_ORDERED = [("Dolly In", "Dolly Out"), ("Truck Right", "Truck Left"), ("Pedestal Down", "Pedestal Up"),
            ("Pan Left", "Pan Right"), ("Tilt Down", "Tilt Up"), ("Roll CCW", "Roll CW")]


_VOCAB_ORDER = [name for pair in _ORDERED for name in pair]


def _loop_commands(pos, quats, trans_th: float, rot_th_deg: float, interval: int) -> list[list[str]]:
    rot_th = np.deg2rad(rot_th_deg * math.sqrt(interval) / 1.8)
    trans_th = trans_th * math.sqrt(interval)
    stride = int(math.sqrt(interval) + 1)
    out = []
    i = 0
    while i + interval < len(pos):
        ri = Rotation.from_quat(quats[i])
        rj = Rotation.from_quat(quats[i + interval])
        dx, dy, dz = ri.apply(pos[i + interval] - pos[i])
        yaw, pitch, roll = (rj * ri.inv()).as_euler("yxz")
        cmds = []
        for (pos_name, neg_name), v, th in zip(_ORDERED, (dz, dx, dy, yaw, pitch, roll), (trans_th,) * 3 + (rot_th,) * 3):
            if v > th:
                cmds.append(pos_name)
            elif v < -th:
                cmds.append(neg_name)
        out.append(cmds or ["Stay"])
        i += stride
    return out


def loop_enhanced_instructions(poses: np.ndarray, move_dist: float) -> dict[str, list[str]]:
    """Enhanced instructions of one trajectory, pair by pair and vote by vote."""
    grid = [(iv, a) for iv in (1, 3, 5) for a in (0.03, 0.05, 0.1)]
    T = len(poses)
    trans_th = max((move_dist / T) / 1.1, 0.01) if T > 1 else 0.01
    results = []
    for iv, a in grid:
        pos, quats = _loop_filter(poses, a)
        results.append(_loop_commands(pos, quats, trans_th, 1.5, iv))
    return loop_merge(loop_vote(results, grid))


def loop_vote(results: list[list[list[str]]], grid: list[tuple[int, float]]) -> list[list[str]]:
    """Per unit step: count the votes of every pair covering it, resolve conflicts, select."""
    n_units = 0
    for (iv, _), res in zip(grid, results):
        if res:
            n_units = max(n_units, (len(res) - 1) * int(math.sqrt(iv) + 1) + iv)
    opposite = {a: b for a, b in _ORDERED} | {b: a for a, b in _ORDERED}
    final = []
    for s in range(n_units):
        votes: Counter = Counter()
        for (iv, _), res in zip(grid, results):
            stride = int(math.sqrt(iv) + 1)
            for k, seg in enumerate(res):
                if k * stride <= s < k * stride + iv:
                    for cmd in seg:
                        votes[cmd] += 1
        kept: list[tuple[str, int]] = []
        for cmd, n in votes.most_common():
            if cmd == "Stay" or opposite[cmd] not in {c for c, _ in kept}:
                kept.append((cmd, n))
        others = [(c, n) for c, n in kept if c != "Stay"]
        if not others:
            final.append(["Stay"])
            continue
        top = others[0][1]
        if len(others) >= 2 and top >= 3 * others[1][1]:
            sel = [c for c, n in others if n == top]
        else:
            sel = [c for c, n in others if n >= 0.5 * top][:4]
            if len(sel) < 2 and len(others) >= 2:
                sel = [c for c, _ in others[:2]]
        final.append(sorted(sel, key=_VOCAB_ORDER.index))  # vocabulary order, as the library
    return final


def loop_merge(final: list[list[str]]) -> dict[str, list[str]]:
    """Merge runs of equal command lists into {"start->end": commands}."""
    merged: dict[str, list[str]] = {}
    if final:
        start = 0
        for i in range(1, len(final) + 1):
            if i == len(final) or final[i] != final[start]:
                merged[f"{start}->{i}"] = final[start]
                start = i
    return merged


# --------------------------------------------------------------------------- run
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="trajectories for the vectorised run")
    ap.add_argument("--length", type=int, default=75, help="poses per trajectory")
    ap.add_argument("--baseline-n", type=int, default=300, help="trajectories for the per-frame baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from spatialvid.processors.geometry.instructions import motion_instructions_batch
    from spatialvid.processors.geometry.metrics import trajectory_metrics_batch

    t0 = time.perf_counter()
    poses = make_trajectories(args.n, args.length, args.seed)
    print(f"made {args.n} trajectories of {args.length} poses in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    metrics = trajectory_metrics_batch(poses)
    t_metrics = time.perf_counter() - t0
    t0 = time.perf_counter()
    instr = motion_instructions_batch(poses, "enhanced", move_dist=metrics.move_dist)
    t_instr = time.perf_counter() - t0
    vec_rate = args.n / (t_metrics + t_instr)
    print(f"vectorised: metrics {t_metrics:.2f} s + enhanced instructions {t_instr:.2f} s "
          f"= {vec_rate:,.0f} trajectories/s")

    nb = min(args.baseline_n, args.n)
    t0 = time.perf_counter()
    loop_m = [loop_metrics(poses[b]) for b in range(nb)]
    t_lm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop_i = [loop_enhanced_instructions(poses[b], loop_m[b]["move_dist"]) for b in range(nb)]
    t_li = time.perf_counter() - t0
    loop_rate = nb / (t_lm + t_li)
    print(f"per-frame baseline ({nb} trajectories): metrics {t_lm:.2f} s + instructions {t_li:.2f} s "
          f"= {loop_rate:,.1f} trajectories/s")

    mismatches = 0
    for b in range(nb):
        m = metrics[b]
        lm = loop_m[b]
        same = (
            m.anomaly == lm["anomaly"]
            and m.dist_level == lm["dist_level"]
            and m.traj_turns == lm["traj_turns"]
            and math.isclose(m.move_dist, lm["move_dist"], rel_tol=1e-9, abs_tol=1e-12)
            and math.isclose(m.rot_angle, lm["rot_angle"], rel_tol=1e-9, abs_tol=1e-12)
            and instr[b] == loop_i[b]
        )
        mismatches += not same
    anomalies = int(metrics.anomaly.sum())
    print(f"agreement on the baseline subset: {nb - mismatches}/{nb} identical; "
          f"anomalies flagged {anomalies}/{args.n}; mean turns {metrics.traj_turns.mean():.2f}")
    print(f"speed-up (throughput ratio): {vec_rate / loop_rate:,.0f}x")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
