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
    a, b = TorchVmafMotion("cpu", batch=5), TorchVmafMotion("cuda", batch=16, fused=False)
    c = TorchVmafMotion("cuda", batch=16)  # the fused kernels where Triton is there
    for y in lumas:
        a.push(y)
        b.push(y)
        c.push(y)
    assert np.array_equal(a.per_frame(), b.per_frame())
    assert np.array_equal(a.per_frame(), c.per_frame())


def test_triton_blur_equals_the_torch_blur() -> None:
    """The fused CUDA kernels: the eager path's blurred integers and SADs, bit for bit, on
    frame sizes at the mirror's limits, odd widths across the kernel's 256-pixel blocks,
    flat and extreme frames (the largest sums) and batches that split a clip."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    pytest.importorskip("triton")
    from spatialvid.processors.scorers import motion_triton
    from spatialvid.processors.scorers.motion import TorchVmafMotion, _mirror

    rng = np.random.default_rng(3)
    for h, w in ((3, 3), (5, 4), (17, 23), (64, 257), (360, 640), (720, 1280), (1080, 1920)):
        frames = rng.integers(0, 256, (6, h, w), dtype=np.uint8)
        frames[1] = 255  # all-white: the largest sums the int64 accumulator sees
        frames[2] = 0
        frames[3] = frames[3] // 64 * 64  # coarse steps
        eager = TorchVmafMotion("cuda", batch=4, fused=False)
        eager._shape, eager._buf = (h, w), eager._buffers(h, w)
        x = torch.from_numpy(frames).cuda()
        want = eager._blur(x).to(torch.int32)
        got = torch.empty((6, h, w), dtype=torch.int32, device="cuda")
        rows, cols = (torch.from_numpy(_mirror(n)).cuda() for n in (h, w))
        motion_triton.blur(x, got, rows, cols)
        assert torch.equal(got, want), f"{h}x{w}"
        sads = torch.empty(5, dtype=torch.int64, device="cuda")
        motion_triton.sad(got, sads)
        assert torch.equal(sads, (want[1:].long() - want[:-1].long()).abs().sum(dim=(1, 2))), f"{h}x{w}"
        a, b = TorchVmafMotion("cuda", batch=4, fused=False), TorchVmafMotion("cuda", batch=4, fused=True)
        for f in frames:
            a.push(f)
            b.push(f)
        assert np.array_equal(a.per_frame(), b.per_frame()), f"{h}x{w}"


def test_to_rgb_gives_to_ndarray_bytes_across_frames_and_sizes(sample_videos: dict[str, Path]) -> None:
    """The per-thread reformatter keeps its swscale context; frames of other sizes and
    formats in between must still convert exactly as ``to_ndarray`` does."""
    from spatialvid.processors.frames import iter_frames, to_rgb

    for name in list(sample_videos)[:2]:
        for i, (_, f) in enumerate(iter_frames(str(sample_videos[name]), 0, 12)):
            for w, h in ((640, 360), (320, 180), (f.width, f.height)):
                assert np.array_equal(to_rgb(f, w, h), f.to_ndarray(width=w, height=h, format="rgb24"))
            if i == 3:
                gray = f.reformat(format="gray")
                assert np.array_equal(to_rgb(gray, 64, 36), gray.to_ndarray(width=64, height=36, format="rgb24"))


def test_decoder_threads_share_the_cores_among_worker_processes() -> None:
    import os

    from spatialvid.config import ScoringConfig
    from spatialvid.processors.score import decoder_threads

    cores = len(os.sched_getaffinity(0))
    assert decoder_threads(ScoringConfig(decode_processes=False)) == 0  # FFmpeg's choice
    assert decoder_threads(ScoringConfig(decode_threads=3, decode_processes=True)) == 3
    assert decoder_threads(ScoringConfig(decode_processes=True, decode_workers=cores)) == 1
    assert decoder_threads(ScoringConfig(decode_processes=True, decode_workers=1)) == cores
    assert decoder_threads(ScoringConfig(decode_processes=True, decode_workers=4 * cores)) == 1
