"""The models' input resizes on a torch device, byte for byte as on the CPU.

On CUDA the score stage uploads each sampled 640x360 RGB frame once and makes both model
inputs there (``ScoreStage.launch``), instead of in the decode workers:

* CLIP's crop (``aesthetic.clip_crop``): PIL's bicubic resize, short side to 224, centre
  crop. PIL resamples in fixed point (``Resample.c``): per output pixel a window of
  source pixels with coefficients computed in double precision, normalised to integers
  with 22 fractional bits; an 8-bit result per pass, ``clip8((sum + 2**21) >> 22)``,
  horizontal pass first. Here each pass is a matrix of those integer coefficients,
  applied in float64: every product and partial sum is an integer below 2**31, exact in
  float64 in any order, so the bytes are PIL's.
* The OCR detector's input (rapidocr's ``cv2.resize``, INTER_LINEAR, of the BGR frame):
  OpenCV's fixed point (11-bit coefficients, ``INTER_RESIZE_COEF_BITS``), horizontal
  sums ``S`` exact, then the vertical step as OpenCV's SIMD code computes it for 8-bit
  rows (``VResizeLinearVec_32s8u``): ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16)``,
  rounded by ``(x + 2) >> 2`` (equal bytes for every size tested, up- and downscaling).

Both are checked against PIL and OpenCV themselves (tests/test_resample.py), on the CPU
and on CUDA; the stage's rows are the same either way (tests/test_score_models.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

PIL_PRECISION_BITS = 32 - 8 - 2  # Resample.c, 8 bits per channel
CV_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS


def _bicubic(x: float) -> float:
    """PIL's ``bicubic_filter`` (a = -0.5), in the same order of operations."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """PIL's 8-bit bicubic coefficients for ``in_size -> out_size`` as an ``out x in``
    float64 matrix of integers (``precompute_coeffs`` + ``normalize_coeffs_8bpc``)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    m = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for v in w:  # summed in order, as PIL does
            ww += v
        for x, v in enumerate(w):
            k = v / ww if ww != 0.0 else v
            k = k * (1 << PIL_PRECISION_BITS)
            m[xx, xmin + x] = math.trunc(k - 0.5 if k < 0 else k + 0.5)
    return m


_ON_DEVICE: dict[tuple[Any, ...], torch.Tensor] = {}


def _on(device: torch.device, key: tuple[Any, ...], make: Any) -> torch.Tensor:
    """``torch.from_numpy(make())`` on ``device``, made and copied there once per key (a
    copy from pageable memory would wait for the device's queued work on every call)."""
    full = (*key, str(device))
    if full not in _ON_DEVICE:
        _ON_DEVICE[full] = torch.from_numpy(np.ascontiguousarray(make())).to(device)
    return _ON_DEVICE[full]


def _pil_pass(x: torch.Tensor, in_size: int, out_size: int, keep: slice, dim: int) -> torch.Tensor:
    """One PIL resampling pass along ``dim`` of a float64 batch, outputs ``keep`` only:
    ``clip8((sum + 2**21) >> 22)``."""
    m = _on(x.device, ("pil", in_size, out_size, keep.start, keep.stop),
            lambda: pil_bicubic_matrix(in_size, out_size)[keep].T)
    y = torch.movedim(torch.movedim(x, dim, -1) @ m, -1, dim)
    return torch.floor((y + (1 << (PIL_PRECISION_BITS - 1))) / (1 << PIL_PRECISION_BITS)).clamp_(0, 255)


def _chunked(fn: Any, frames: torch.Tensor, *args: Any, chunk: int = 32) -> torch.Tensor:
    """``fn`` over ``chunk`` frames at a time (bounds the wide intermediates: float64/int64
    copies of whole frames)."""
    if len(frames) <= chunk:
        return fn(frames, *args)
    return torch.cat([fn(frames[i:i + chunk], *args) for i in range(0, len(frames), chunk)])


def clip_crop_batch(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """:func:`aesthetic.clip_crop` of a batch: N x H x W x 3 uint8 -> N x size x size x 3 uint8.

    PIL's bicubic resize of the short side to ``size`` (the long side truncated, as
    torchvision does) and the centre crop; only the kept rows/columns are computed (a
    pass's outputs do not depend on each other).
    """
    return _chunked(_clip_crop, frames, size)


def _clip_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    h, w = frames.shape[1:3]
    if w > h:
        new_w, new_h = int(size * w / h), size
    else:
        new_w, new_h = size, int(size * h / w)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = frames.to(torch.float64)
    if new_w != w:  # PIL skips a pass whose size does not change
        x = _pil_pass(x, w, new_w, slice(left, left + size), 2)
    else:
        x = x[:, :, left:left + size]
    if new_h != h:
        x = _pil_pass(x, h, new_h, slice(top, top + size), 1)
    else:
        x = x[:, top:top + size]
    return x.to(torch.uint8)


def cv2_linear_coefficients(in_size: int, out_size: int, rows: bool = False) -> np.ndarray:
    """OpenCV's INTER_LINEAR source indices and 11-bit weights for ``in_size -> out_size``
    (``resizeGeneric``: float32 positions): rows (i0, i1, w0, w1) of a 4 x out int64 array.
    Past a border, columns take the edge pixel with weight 1; ``rows`` keep their weights
    and read the edge row twice."""
    scale = 1.0 / (float(out_size) / in_size)
    i0, w0, w1 = (np.empty(out_size, np.int64) for _ in range(3))
    one = np.float32(1 << CV_COEF_BITS)
    for d in range(out_size):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = int(np.floor(f))
        f = np.float32(f - np.float32(s))
        if not rows and s < 0:
            s, f = 0, np.float32(0)
        if not rows and s >= in_size - 1:
            s, f = in_size - 1, np.float32(0)
        i0[d] = s
        w0[d] = int(np.rint((np.float32(1) - f) * one))
        w1[d] = int(np.rint(f * one))
    return np.stack([np.clip(i0, 0, in_size - 1), np.clip(i0 + 1, 0, in_size - 1), w0, w1])


def cv2_resize_linear(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cv2.resize(frame, (width, height))`` (INTER_LINEAR) of N x H x W x C uint8 frames."""
    return _chunked(_cv2_linear, frames, height, width)


def _cv2_linear(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    h, w = frames.shape[1:3]
    if (h, w) == (height, width):
        return frames.clone()
    dev = frames.device
    i0, i1, w0, w1 = _on(dev, ("cv2", w, width), lambda: cv2_linear_coefficients(w, width))
    x = frames.to(torch.int64)
    s = x[:, :, i0] * w0.view(1, 1, -1, 1) + x[:, :, i1] * w1.view(1, 1, -1, 1)
    j0, j1, b0, b1 = _on(dev, ("cv2-rows", h, height), lambda: cv2_linear_coefficients(h, height, rows=True))
    v = (((s[:, j0] >> 4) * b0.view(1, -1, 1, 1)) >> 16) + (((s[:, j1] >> 4) * b1.view(1, -1, 1, 1)) >> 16)
    return ((v + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def bgr(frames: torch.Tensor) -> torch.Tensor:
    """RGB -> BGR (``cv2.cvtColor(..., COLOR_RGB2BGR)``) of N x H x W x 3 frames."""
    return frames.flip(-1)


def upload(arrays: list[np.ndarray], device: Any, cache: dict[str, Any]) -> torch.Tensor:
    """Stack equally shaped uint8 arrays into a reused pinned buffer and copy them to
    ``device`` (one transfer). The buffer is reused only once its last copy is done.
    (On the CPU: the stacked arrays.)"""
    if torch.device(device).type != "cuda":
        return torch.from_numpy(np.stack(arrays))
    n, shape = len(arrays), arrays[0].shape
    host = cache.get("host")
    if host is None or host.shape[1:] != shape or host.shape[0] < n:
        host = cache["host"] = torch.empty((n, *shape), dtype=torch.uint8, pin_memory=True)
        cache["done"] = None
    if cache.get("done") is not None:
        cache["done"].synchronize()
    buf = host.numpy()
    for i, a in enumerate(arrays):
        np.copyto(buf[i], a)
    out = host[:n].to(device, non_blocking=True)
    done = cache["done"] = torch.cuda.Event(blocking=True)
    done.record(torch.cuda.current_stream(device))
    return out
