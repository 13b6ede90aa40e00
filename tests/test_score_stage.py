"""The score stage's measurements agree with straightforward whole-video computations."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from spatialvid.processors.frames import luma, sample_indices
from spatialvid.processors.score import measure_clip
from spatialvid.processors.scorers.luminance import frame_luminance
from spatialvid.processors.scorers.motion import vmaf_motion
from spatialvid.schemas.records import ClipRecord


def whole_video(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return [luma(f).copy() for f in frames], [f.to_ndarray(width=640, height=360, format="rgb24") for f in frames]


@pytest.mark.parametrize("start, end", [(0, 72), (50, 122), (96, 168)])
def test_clip_scores_equal_the_whole_video_reference(sample_videos: dict[str, Path], start: int, end: int) -> None:
    """The reference scores the whole video and averages motion2 over the clip's frames."""
    path = sample_videos["walk"]
    lumas, rgbs = whole_video(path)
    clip = ClipRecord(clip_id="walk_0", video_id="walk", index=0, num_clips=1, uri=str(path), frame_start=start,
                      frame_end=end, timestamp_start=start / 24, timestamp_end=end / 24, fps=24, width=640,
                      height=360, method="test")
    m = measure_clip(clip)
    expected_motion = vmaf_motion(lumas)[start:end].mean()
    assert m.num_frames == end - start
    assert m.motion == pytest.approx(expected_motion, abs=1e-9), f"clip [{start},{end}) motion"
    expected_lum = [frame_luminance(rgbs[i]) for i in sample_indices(start, end)]
    assert [frame_luminance(f) for f in m.sampled_rgb] == pytest.approx(expected_lum)


def test_device_motion_agrees_with_the_cpu_motion(sample_videos: dict[str, Path]) -> None:
    """TorchVmafMotion (the GPU path; here torch on the CPU): exact integer blur, one rounding."""
    pytest.importorskip("torch")
    from functools import partial

    from spatialvid.processors.scorers.motion import TorchVmafMotion

    path = sample_videos["walk"]
    lumas, _ = whole_video(path)
    dev = TorchVmafMotion("cpu", batch=7)  # batches that do not divide the frame count
    for y in lumas:
        dev.push(y)
    assert dev.per_frame() == pytest.approx(vmaf_motion(lumas), abs=1e-4)
    clip = ClipRecord(clip_id="walk_0", video_id="walk", index=0, num_clips=1, uri=str(path), frame_start=50,
                      frame_end=122, timestamp_start=50 / 24, timestamp_end=122 / 24, fps=24, width=640, height=360,
                      method="test")
    cpu, gpu_like = measure_clip(clip), measure_clip(clip, motion_factory=partial(TorchVmafMotion, "cpu"))
    assert gpu_like.motion == pytest.approx(cpu.motion, abs=1e-4)
    assert gpu_like.num_frames == cpu.num_frames
    assert all(np.array_equal(a, b) for a, b in zip(gpu_like.sampled_rgb, cpu.sampled_rgb))


def test_cuda_motion_equals_the_torch_cpu_motion(sample_videos: dict[str, Path]) -> None:
    """Integer arithmetic: the GPU gives the CPU torch path's values exactly."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    from spatialvid.processors.scorers.motion import TorchVmafMotion

    lumas, _ = whole_video(sample_videos["walk"])
    a, b = TorchVmafMotion("cpu", batch=5), TorchVmafMotion("cuda", batch=16)
    for y in lumas:
        a.push(y)
        b.push(y)
    assert np.array_equal(a.per_frame(), b.per_frame())
