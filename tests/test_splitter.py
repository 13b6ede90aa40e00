import pytest

from spatialvid.processors.split import fixed_windows


@pytest.mark.parametrize(
    "seconds, expected_s",
    [
        (30, [(0, 10), (10, 20), (20, 30)]),
        (23, [(0, 10), (10, 20), (20, 23)]),  # 3 s remainder is a clip of its own
        (22, [(0, 10), (10, 22)]),  # 2 s remainder joins the previous window (12 s <= 15 s)
        (12, [(0, 12)]),
        (3, [(0, 3)]),
        (2.5, []),  # shorter than the 3 s minimum: no clip
    ],
)
def test_fixed_windows_respect_the_3_to_15_second_bounds(seconds: float, expected_s: list[tuple[int, int]]) -> None:
    fps = 24.0
    spans = fixed_windows(int(seconds * fps), fps, window_s=10, min_s=3, max_s=15)
    assert spans == [(int(a * fps), int(b * fps)) for a, b in expected_s]
    for a, b in spans:
        assert 3 * fps <= b - a <= 15 * fps, f"clip [{a},{b}) of a {seconds}s video is outside 3..15 s"
