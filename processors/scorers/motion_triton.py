"""Fused VMAF motion kernels for CUDA (Triton): the blur and the SAD of
:class:`~.motion.TorchVmafMotion` without its ~6 GB of temporaries per 16 frames.

The eager torch path materialises every tap product and partial sum of a batch as a full
int32/int64 tensor: about 6 GB of device memory traffic per 16 frames of 720p, ~1.8 ms
of an H200 per flush, so 16 decode workers kept the GPU busy most of the time with motion
alone and spun on its synchronisation. Here one program blurs one row segment of one
frame in registers (25 gathers of the uint8 frame, libvmaf's mirror from the same index
tables, the same exact integer sums and the same single half-to-even rounding) and
writes the int32 result; a second kernel sums each frame's absolute differences to the
previous blurred frame. Same integers as the torch path, bit for bit
(``tests/test_score_stage.py::test_triton_blur_equals_the_torch_blur``, CUDA only).

Imported only when a CUDA device and Triton are there (Triton ships with PyTorch's CUDA
builds): ``motion._triton_motion`` returns this module, or None without Triton.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from .motion import VMAF_TAPS

# The kernels spell the taps out (symmetric: 3571, 16004, 26386) and round at 2**23 of 2**24.
assert VMAF_TAPS == (3571, 16004, 26386, 16004, 3571)


@triton.jit
def _column(base, r0, r1, r2, r3, r4, W, c, m):
    """Vertical taps at columns ``c`` (int32: at most 255 * 65536)."""
    p0 = tl.load(base + r0 * W + c, mask=m, other=0).to(tl.int32)
    p1 = tl.load(base + r1 * W + c, mask=m, other=0).to(tl.int32)
    p2 = tl.load(base + r2 * W + c, mask=m, other=0).to(tl.int32)
    p3 = tl.load(base + r3 * W + c, mask=m, other=0).to(tl.int32)
    p4 = tl.load(base + r4 * W + c, mask=m, other=0).to(tl.int32)
    return (p0 + p4) * 3571 + (p1 + p3) * 16004 + p2 * 26386


@triton.jit
def _blur_kernel(src, dst, rows, cols, H, W, BLOCK: tl.constexpr):
    """dst[f, y, x0:x0+BLOCK] = libvmaf blur of src[f] (uint8), 1/256 units, rounded once."""
    xb = tl.program_id(0)
    y = tl.program_id(1)
    f = tl.program_id(2).to(tl.int64)
    x = xb * BLOCK + tl.arange(0, BLOCK)
    m = x < W
    base = src + f * H * W
    r0 = tl.load(rows + y).to(tl.int64)
    r1 = tl.load(rows + y + 1).to(tl.int64)
    r2 = tl.load(rows + y + 2).to(tl.int64)
    r3 = tl.load(rows + y + 3).to(tl.int64)
    r4 = tl.load(rows + y + 4).to(tl.int64)
    c0 = tl.load(cols + x, mask=m, other=0)
    c1 = tl.load(cols + x + 1, mask=m, other=0)
    c2 = tl.load(cols + x + 2, mask=m, other=0)
    c3 = tl.load(cols + x + 3, mask=m, other=0)
    c4 = tl.load(cols + x + 4, mask=m, other=0)
    v0 = _column(base, r0, r1, r2, r3, r4, W, c0, m).to(tl.int64)
    v1 = _column(base, r0, r1, r2, r3, r4, W, c1, m).to(tl.int64)
    v2 = _column(base, r0, r1, r2, r3, r4, W, c2, m).to(tl.int64)
    v3 = _column(base, r0, r1, r2, r3, r4, W, c3, m).to(tl.int64)
    v4 = _column(base, r0, r1, r2, r3, r4, W, c4, m).to(tl.int64)
    s = (v0 + v4) * 3571 + (v1 + v3) * 16004 + v2 * 26386  # exact: < 2**40
    q = s >> 24
    r = s & 16777215
    up = (r > 8388608) | ((r == 8388608) & ((q & 1) == 1))  # half to even
    q = q + up.to(tl.int64)
    tl.store(dst + f * H * W + y * W + x, q.to(tl.int32), mask=m)


@triton.jit
def _sad_kernel(blurred, sads, H, W, BLOCK: tl.constexpr):
    """sads[f] += sum |blurred[f + 1, y] - blurred[f, y]| over one row segment."""
    xb = tl.program_id(0)
    y = tl.program_id(1)
    f = tl.program_id(2).to(tl.int64)
    x = xb * BLOCK + tl.arange(0, BLOCK)
    m = x < W
    a = tl.load(blurred + f * H * W + y * W + x, mask=m, other=0)
    b = tl.load(blurred + (f + 1) * H * W + y * W + x, mask=m, other=0)
    d = tl.sum(tl.abs(b - a).to(tl.int64), axis=0)
    tl.atomic_add(sads + f, d)


BLOCK = 256


def blur(x: Any, out: Any, rows: Any, cols: Any) -> None:
    """Blur the (k, H, W) uint8 frames ``x`` into ``out`` ((k, H, W) int32, contiguous).

    ``rows`` / ``cols``: the source index of each padded position (``motion._mirror``)."""
    k, h, w = x.shape
    _blur_kernel[(triton.cdiv(w, BLOCK), h, k)](x, out, rows, cols, h, w, BLOCK=BLOCK)


def sad(blurred: Any, out: Any) -> None:
    """``out[f] = SAD(blurred[f], blurred[f + 1])`` for f < len(blurred) - 1 (int64, zeroed first)."""
    k, h, w = blurred.shape
    out.zero_()
    if k > 1:
        _sad_kernel[(triton.cdiv(w, BLOCK), h, k - 1)](blurred, out, h, w, BLOCK=BLOCK)
