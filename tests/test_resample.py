"""The models' input resizes on a torch device give PIL's and OpenCV's bytes (scorers/resample.py).

On CUDA the score stage makes CLIP's crop and the OCR detector's input on the GPU from the
uploaded frames; these tests hold them to the CPU functions they replace, on real video
frames, rendered text and random noise, up- and downscaling, on the CPU and on CUDA.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the device resizes need torch (pip install -e '.[models]')")

from spatialvid.processors.scorers.aesthetic import clip_crop  # noqa: E402
from spatialvid.processors.scorers.resample import (  # noqa: E402
    bgr, clip_crop_batch, cv2_resize_linear, upload)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here; bench/device_score.sh runs these on the GPU host"))]


def frames_of(size: tuple[int, int], video: Path, seed: int) -> np.ndarray:
    """Four RGB frames of ``size`` (h, w): two of a real encoded video, noise, a hard-edged pattern."""
    h, w = size
    with av.open(str(video)) as c:
        real = [f.to_ndarray(width=w, height=h, format="rgb24") for i, f in enumerate(c.decode(video=0)) if i in (0, 40)]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    edges = np.where(rng.random((h, w, 1)) < 0.5, 255, 0).astype(np.uint8).repeat(3, axis=2)
    cv2.putText(edges, "TEXT 0123", (2, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 128), 2)
    return np.stack([*real, noise, edges])


@pytest.mark.parametrize("device", DEVICES)
def test_clip_crop_on_the_device_is_pils(device: str, sample_videos: dict[str, Path]) -> None:
    for k, size in enumerate([(360, 640), (720, 1280), (272, 640), (361, 641), (640, 360), (300, 300), (225, 1000),
                              (50, 70)]):
        frames = frames_of(size, sample_videos["walk"], k)
        got = clip_crop_batch(torch.from_numpy(frames).to(device)).cpu().numpy()
        want = np.stack([clip_crop(f) for f in frames])
        assert got.shape == want.shape == (len(frames), 224, 224, 3)
        assert np.array_equal(got, want), f"{size}: {(got != want).sum()} bytes differ"


@pytest.mark.parametrize("device", DEVICES)
def test_detector_input_on_the_device_is_opencvs(device: str, sample_videos: dict[str, Path]) -> None:
    """cv2.resize (INTER_LINEAR) of the BGR frame, as rapidocr makes the detector's input."""
    for k, (size, out) in enumerate([((360, 640), (352, 640)), ((720, 1280), (704, 1280)), ((1080, 1920), (544, 960)),
                                     ((360, 640), (736, 1312)), ((333, 517), (320, 512)), ((300, 400), (200, 37)),
                                     ((360, 640), (360, 640))]):
        frames = frames_of(size, sample_videos["walk"], k)
        got = cv2_resize_linear(bgr(torch.from_numpy(frames).to(device)), *out).cpu().numpy()
        want = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), out[::-1]) for f in frames])
        assert np.array_equal(got, want), f"{size} -> {out}: {(got != want).sum()} bytes differ"


@pytest.mark.parametrize("device", DEVICES)
def test_upload_stacks_the_frames_on_the_device(device: str) -> None:
    cache: dict = {}
    rng = np.random.default_rng(0)
    for n in (3, 5, 2):  # the pinned buffer grows, then is reused
        arrays = list(rng.integers(0, 256, (n, 36, 64, 3), dtype=np.uint8))
        got = upload(arrays, device, cache)
        assert got.device.type == device and np.array_equal(got.cpu().numpy(), np.stack(arrays))
