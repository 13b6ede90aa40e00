import numpy as np
import pytest

from spatialvid.processors.scorers.luminance import frame_luminance, luminance_passes, luminance_stats


def solid(r: int, g: int, b: int) -> np.ndarray:
    return np.broadcast_to(np.array([r, g, b], np.uint8), (360, 640, 3)).copy()


def test_bt709_weights_on_pure_colours() -> None:
    assert frame_luminance(solid(255, 0, 0)) == pytest.approx(0.2126 * 255)
    assert frame_luminance(solid(0, 255, 0)) == pytest.approx(0.7152 * 255)
    assert frame_luminance(solid(0, 0, 255)) == pytest.approx(0.0722 * 255)


def test_stats_are_mean_min_max_over_frames() -> None:
    s = luminance_stats([solid(10, 10, 10), solid(100, 100, 100), solid(40, 40, 40)])
    assert (s.mean, s.min, s.max) == pytest.approx((50.0, 10.0, 100.0))


def test_matches_per_pixel_reference_on_random_frame() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    ref = (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]).mean()
    assert frame_luminance(rgb) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("mean, ok", [(19.99, False), (20.0, True), (80, True), (140.0, True), (140.01, False)])
def test_keep_range_is_20_to_140_inclusive(mean: float, ok: bool) -> None:
    passed, reason = luminance_passes(mean)
    assert passed is ok, f"luminance {mean}: expected pass={ok}, got reason {reason!r}"
    assert bool(reason) is not ok


def test_integer_channel_sums_give_the_float_mean_bit_for_bit() -> None:
    """The fast path (exact integer sums) equals the plain float64 channel means exactly."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((360, 640, 3), (1080, 1920, 3), (5, 7, 3))]
    frames += [solid(255, 255, 255), solid(0, 0, 0), rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)[::2, 1::3]]
    for rgb in frames:
        means = rgb.reshape(-1, 3).astype(np.float64).mean(axis=0)
        assert frame_luminance(rgb) == float(means @ np.array([0.2126, 0.7152, 0.0722], np.float32).astype(np.float64))
