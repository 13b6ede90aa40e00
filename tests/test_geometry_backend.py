"""The geometry backends on rendered clips with known camera paths (SPEC.md §3, issue 6).

Accuracy is checked at low resolution on a few frames to keep the suite quick; the
720p numbers for every sequence are in bench/bench_geometry.py and docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycolmap", reason="the colmap backend needs pycolmap (a core dependency: pip install 'pycolmap>=4.2,<5')")

from spatialvid.processors.geometry.align import scale_invariant_depth_error, trajectory_error, umeyama
from spatialvid.processors.geometry.backends.base import (
    fill_gaps,
    get_backend,
    rebase_to_first,
    sample_step,
    self_calibrate_focal,
)
from spatialvid.processors.geometry.backends.colmap import ColmapBackend, ColmapOptions
from spatialvid.processors.geometry.poses import camera_centers, poses7_from_c2w, quat_angle
from spatialvid.producers.rendered import look_rotation, render_sequence

W, H = 320, 180


def sampled(name: str, seconds: float = 4.0, fps: float = 10.0):  # type: ignore[no-untyped-def]
    """The frames a backend samples (about 5 fps) of a ``seconds`` clip of sequence ``name``."""
    idx = np.arange(0, int(seconds * fps), sample_step(fps, 5.0))
    return render_sequence(name, W, H, fps=fps, duration_s=seconds, frame_indexes=idx)


def backend() -> ColmapBackend:
    b = ColmapBackend(ColmapOptions(num_threads=2))
    b.setup()
    return b


@pytest.mark.parametrize("name, seconds", [("handheld", 4.0), ("orbit", 4.0)])
def test_colmap_meets_the_accuracy_thresholds(name: str, seconds: float) -> None:
    # At this test resolution (320 x 180) the pan sequence settles in a wrong
    # focal/rotation minimum (it is exact at 720p: docs/benchmarks.md), so the quick
    # check uses two sequences that are right at any resolution.
    clip = sampled(name, seconds)
    res = backend().estimate(clip.frames, clip.frame_indexes)
    assert res.success, f"{name}: {res.reason}"
    assert res.registered_share == 1.0 and res.registered.all(), f"{name}: registered {res.registered_share:.2f}"
    err = trajectory_error(res.poses, clip.poses)
    assert err.rot_median_deg < 1.0, f"{name}: median rotation error {err.rot_median_deg:.3f} deg (limit 1)"
    assert err.ate_pct < 2.0, f"{name}: ATE {err.ate_pct:.2f}% of the {err.path_length:.2f} m path (limit 2%)"
    focal = res.intrinsics[0, 0] / clip.intrinsics[0, 0]
    assert abs(focal - 1) < 0.03, f"{name}: focal {res.intrinsics[0, 0]:.1f} px, true {clip.intrinsics[0, 0]:.1f}"
    # Conventions: world = first camera, median scene depth = 1 unit.
    assert np.allclose(res.poses[0], [0, 0, 0, 0, 0, 0, 1], atol=1e-9)
    assert res.scale_convention and res.version.startswith("pycolmap-")


@pytest.mark.parametrize("name, why", [("static", "no parallax"), ("zoom", "no parallax"),
                                       ("textureless", "too few features")])
def test_degenerate_clips_end_unsuccessful_with_a_reason(name: str, why: str) -> None:
    import re

    clip = sampled(name, seconds=2.0)
    res = backend().estimate(clip.frames, clip.frame_indexes)
    assert not res.success, f"{name}: must not produce poses"
    assert re.search(why, res.reason), f"{name}: reason {res.reason!r} should match {why!r}"
    assert res.poses.shape == (0, 7) and res.num_frames == 0


def test_unregistered_frames_are_interpolated_inside_and_dropped_at_the_ends() -> None:
    t = np.linspace(0, 1, 8)
    R = np.stack([look_rotation(np.array([np.sin(a), 0.0, np.cos(a)])) for a in 0.5 * t])
    truth = poses7_from_c2w(R, np.stack([t, 0 * t, 2 * t], axis=1))
    reg = np.array([False, True, True, False, False, True, True, False])
    est = np.where(reg[:, None], truth, np.nan)
    poses, keep = fill_gaps(est, reg, max_gap=2)
    assert keep.tolist() == [False, True, True, True, True, True, True, False], "ends dropped, never extrapolated"
    assert np.allclose(camera_centers(poses[3:5]), camera_centers(truth[3:5]), atol=1e-9)
    assert np.degrees(quat_angle(poses[3:5, 3:], truth[3:5, 3:])).max() < 1e-6
    _, keep1 = fill_gaps(est, reg, max_gap=1)
    assert not keep1[3:5].any(), "a gap longer than max_gap is not filled"


def test_self_calibration_recovers_the_focal_length() -> None:
    rng = np.random.default_rng(0)
    f, w, h = 420.0, 640, 360
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    Ki = np.linalg.inv(K)
    Fs = []
    for _ in range(6):
        axis = rng.normal(size=3)
        from scipy.spatial.transform import Rotation

        Rm = Rotation.from_rotvec(0.1 * axis / np.linalg.norm(axis)).as_matrix()
        t = rng.normal(size=3)
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        Fs.append(Ki.T @ tx @ Rm @ Ki)
    got = self_calibrate_focal(Fs, [1.0] * 6, w, h)
    assert got is not None and abs(got / f - 1) < 0.01, f"focal {got} for true {f}"
    assert self_calibrate_focal(Fs[:2], [1.0, 1.0], w, h) is None, "too few pairs: no estimate"


def test_alignment_and_error_measures() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    from scipy.spatial.transform import Rotation

    Rm = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    s, R, t = umeyama(src, 2.5 * src @ Rm.T + [1, 2, 3])
    assert s == pytest.approx(2.5) and np.allclose(R, Rm) and np.allclose(t, [1, 2, 3])
    clip = sampled("orbit", seconds=2.0)
    assert trajectory_error(rebase_to_first(clip.poses), clip.poses).ate_pct < 1e-6, "a rigid re-basing is no error"
    depth = clip.depth[0]
    assert scale_invariant_depth_error(3.0 * depth, depth) < 1e-6, "a global scale is no depth error"
    assert scale_invariant_depth_error(depth**1.5, depth) > 0.1


def test_sampling_step_and_backend_registry() -> None:
    assert [sample_step(f) for f in (30, 29.97, 24, 60, 5, 2)] == [6, 5, 4, 12, 1, 1]
    assert get_backend("colmap") is ColmapBackend and get_backend("colmap-default").name == "colmap-default"
    with pytest.raises(KeyError, match="known"):
        get_backend("nope")


def test_megasam_adapter_reads_back_the_reconstruction_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The adapter's contract with a MegaSaM run: frames out, ``*_sgd_cvd_hr.npz`` back.
    MegaSaM itself is not here; the external command is a stand-in that writes the true
    cameras in MegaSaM's file format at half resolution, as MegaSaM's own scripts do."""
    import sys

    from spatialvid.processors.geometry.backends.base import GeometryError
    from spatialvid.processors.geometry.backends.megasam import MegaSamBackend
    from spatialvid.processors.geometry.poses import poses7_to_c2w

    clip = sampled("orbit", seconds=2.0)
    c2w = np.tile(np.eye(4), (len(clip.poses), 1, 1))
    c2w[:, :3, :] = poses7_to_c2w(clip.poses)
    K = clip.intrinsics[0] / 2
    np.savez(tmp_path / "truth.npz", cam_c2w=c2w, intrinsic=np.array([[K[0], 0, K[2]], [0, K[1], K[3]], [0, 0, 1]]),
             depths=clip.depth[:, ::2, ::2], images=clip.frames[:, ::2, ::2])
    standin = tmp_path / "standin.py"
    standin.write_text(
        "import os, shutil, sys\n"
        "frames, out = sys.argv[1], sys.argv[2]\n"
        "assert len(os.listdir(frames)) == %d, os.listdir(frames)\n"
        "shutil.copy(%r, os.path.join(out, 'clip_sgd_cvd_hr.npz'))\n" % (len(clip.poses), str(tmp_path / "truth.npz")))
    b = MegaSamBackend(command=f"{sys.executable} {standin} {{frames}} {{out}}")
    b.setup()
    res = b.estimate(clip.frames, clip.frame_indexes)
    assert res.success, res.reason
    assert trajectory_error(res.poses, clip.poses).ate_pct < 1e-6 and np.allclose(res.poses[0, 3:], [0, 0, 0, 1])
    assert np.allclose(res.intrinsics[0], clip.intrinsics[0]), "intrinsics rescaled to the frames' size"
    assert res.depth is not None and res.depth.shape == (len(clip.poses), H // 2, W // 2)
    failing = MegaSamBackend(command=f"{sys.executable} -c 'import sys; sys.exit(3)' {{frames}} {{out}}")
    bad = failing.estimate(clip.frames, clip.frame_indexes)
    assert not bad.success and "exited with 3" in bad.reason
    with pytest.raises(GeometryError, match="megasam_command"):
        MegaSamBackend(command="").setup()
