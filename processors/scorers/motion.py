"""Motion score (SPEC.md §2): VMAF motion, libvmaf's ``integer_motion2`` feature.

What the method is (read from the public sources, libvmaf ``feature/integer_motion.{c,h}``
as released up to v3.0 and FFmpeg ``libavfilter/vf_vmafmotion.c``):

* Each frame's 8-bit luma is blurred with a separable 5-tap Gaussian (sigma = 1). libvmaf
  holds the taps in Q16: ``{3571, 16004, 26386, 16004, 3571}`` (sum 65536); the float
  taps are ``{0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685}``.
  Vertical pass first, ``(acc + 128) >> 8``; then horizontal, ``(acc + 32768) >> 16``:
  the blurred frame is 16-bit, in units of 1/256 of a luma level.
* Borders mirror, and not symmetrically: an index ``i < 0`` reads ``-i`` (reflect-101),
  an index ``i >= n`` reads ``2n - 1 - i`` (reflect with the edge repeated). FFmpeg's
  ``vmafmotion`` and libvmaf's CUDA kernel (``libvmaf_cuda``) mirror the same way.
  (libvmaf's 2026 rewrite of the motion extractor, PRs #1531/#1537, mirrors reflect-101
  on both sides; that moves a frame's score by ~2e-3 at 640x272, less when larger.)
* ``motion(i) = SAD(blur[i-1], blur[i]) / 256 / (W * H)`` (libvmaf rounds ``SAD / 256``
  to float32 before the division): the mean absolute difference of the blurred frames,
  in luma levels.
* ``motion2[0] = 0``; ``motion2[i] = min(motion(i), motion(i+1))`` for the frames in
  between; the last frame gets ``motion(n-1)`` (libvmaf's flush writes the last score).

FFmpeg's native ``vmafmotion`` filter is the same blur and SAD with its own fixed point
(Q15 taps summing to 32767, truncating shifts, 1/128 units); it reports ``motion(i)``
per frame, not ``motion2``, and prints two decimals.

How the SpatialVID reference runs it (``scoring/motion/inference.py``): FFmpeg's
``libvmaf`` (``libvmaf_cuda`` on NVIDIA) with the same video as reference and distorted
input, at the NATIVE resolution (no scaling; ``scale_cuda=format=yuv420p`` only changes
the pixel format), once per source video; a clip's score is the mean of the
``integer_motion2`` column over source frames ``frame_start <= Frame <= frame_end``. So
there a clip's first frame is not 0 and its last frame looks one frame past the clip.
Here the clip is scored on its own, while it is decoded once: its first frame is 0 and
its last frame is ``motion(n-1)``, exactly as libvmaf would score the clip cut out as a
file. For an n-frame clip the mean differs from the reference's by about ``mean / n``.

Implementation: one fused float32 ``cv2.sepFilter2D`` per frame into int16 (the blurred
value in 1/256 units, offset by -32768 so it fits), the two bottom rows and two right
columns redone with libvmaf's mirror, and ``cv2.norm(NORM_L1)`` for an exact integer SAD.
libvmaf rounds twice (after each pass), this rounds once: each blurred pixel is within
one 1/256 unit of libvmaf's (~12% of them differ by one), so a frame's motion is within
2/256 of libvmaf's in the worst case; on real video the two agree to ~5e-5. Only the
previous blurred frame is kept. About 0.5 ms per 720p frame and 1.1 ms per 1080p frame
of one core; OpenCV's own threading buys little next to a threaded decoder.

Feed the Y plane as decoded (``frame.planes[0]``), not ``to_ndarray(format="gray")``:
swscale expands limited-range luma to full range on the way to gray (about x255/219).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar, Iterable

import cv2
import numpy as np

#: libvmaf ``integer_motion.h`` taps, Q16 (sum 65536).
VMAF_TAPS = (3571, 16004, 26386, 16004, 3571)
_Q16 = np.array(VMAF_TAPS, np.float64)
# Horizontal taps sum to 1 and vertical to 256: the output is in 1/256 luma units like
# libvmaf's blur. Both are exact in float32 (integers over powers of two).
_KX = (_Q16 / 65536.0).astype(np.float32).reshape(1, 5)
_KY = (_Q16 / 256.0).astype(np.float32).reshape(5, 1)
# 255 * 256 = 65280 does not fit int16; shift by -32768 (SAD is unchanged by the offset).
_OFFSET = -32768.0


def _mirror(n: int) -> np.ndarray:
    """Source index for each padded position ``-2 .. n+1`` with libvmaf's mirror."""
    i = np.abs(np.arange(-2, n + 2))
    return np.where(i >= n, 2 * n - 1 - i, i)


def _check_luma(luma: np.ndarray, shape: tuple[int, int] | None) -> bool:
    """Raise unless ``luma`` is a 2-D uint8 frame the blur can take, of the clip's ``shape``;
    True for the clip's first frame (``shape`` still None)."""
    if luma.dtype != np.uint8 or luma.ndim != 2:
        raise TypeError(f"luma must be a 2-D uint8 array, got {luma.dtype} with shape {luma.shape}")
    if shape is None:
        h, w = luma.shape
        if h < 3 or w < 3:
            raise ValueError(f"frame {w}x{h} is too small for the 5-tap blur (needs >= 3x3)")
        return True
    if luma.shape != shape:
        raise ValueError(f"frame size changed from {shape} to {luma.shape} within a clip")
    return False


class VmafMotion:
    """Streaming VMAF motion (libvmaf integer_motion2 semantics) over 8-bit luma frames.

    Push each frame's Y plane (uint8, H x W; a strided view is fine) in display order;
    read :meth:`per_frame` / :meth:`mean` at the end. Holds one blurred frame.
    """

    version: ClassVar[str] = "vmaf-motion2-v1"

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._motion: list[float] = []  # motion(i): vs the previous frame; motion(0) = 0
        self._bottom: tuple[np.ndarray, ...] = ()  # np.ix_ gathers for the edge patches
        self._right_t: tuple[np.ndarray, ...] = ()

    def push(self, luma: np.ndarray) -> None:
        """Add the next frame's luma (uint8, H x W)."""
        if _check_luma(luma, self._shape):
            h, w = self._shape = luma.shape
            rows, cols = _mirror(h), _mirror(w)
            self._bottom = np.ix_(rows[h - 2:], cols)  # 6 x (w+4): bottom 2 output rows
            self._right_t = np.ix_(cols[w - 2:], rows)  # 6 x (h+4), of luma.T: right 2 columns
        blurred = self._blur(luma)
        if self._prev is None:
            self._motion.append(0.0)
        else:
            sad = cv2.norm(self._prev, blurred, cv2.NORM_L1)  # exact: integer sum < 2**53
            self._motion.append(self._score(sad))
        self._prev = blurred

    def per_frame(self) -> np.ndarray:
        """The motion2 score of every pushed frame (float64)."""
        return motion2(self._motion)

    def mean(self) -> float:
        """Mean of :meth:`per_frame`; nan when no frame was pushed."""
        return float(self.per_frame().mean()) if self._motion else float("nan")

    # -- internals -------------------------------------------------------------

    def _score(self, sad: float) -> float:
        return sad_motion(sad, *self._shape)  # type: ignore[misc]

    def _blur(self, luma: np.ndarray) -> np.ndarray:
        """Blurred frame, int16, in 1/256 luma units offset by -32768."""
        out = cv2.sepFilter2D(luma, cv2.CV_16S, _KX, _KY, delta=_OFFSET, borderType=cv2.BORDER_REFLECT_101)
        # OpenCV mirrors reflect-101 on every side, which is right at the top and left;
        # redo the 2 bottom rows and 2 right columns with libvmaf's 2n-1-i mirror from
        # small patches padded by index (the right one transposed: long rows are cheaper).
        # Each patch holds every tap its kept outputs need, so OpenCV's border never
        # reaches them.
        h, w = self._shape  # type: ignore[misc]
        bottom = cv2.sepFilter2D(luma[self._bottom], cv2.CV_16S, _KX, _KY, delta=_OFFSET,
                                 borderType=cv2.BORDER_REFLECT_101)
        right = cv2.sepFilter2D(luma.T[self._right_t], cv2.CV_16S, _KY.T, _KX.T, delta=_OFFSET,
                                borderType=cv2.BORDER_REFLECT_101)
        out[h - 2:, :] = bottom[2:4, 2:-2]
        out[:, w - 2:] = right[2:4, 2:-2].T
        return out


def motion2(motion: Iterable[float]) -> np.ndarray:
    """libvmaf's motion2 from the per-frame motion(i) (motion(0) = 0): min of i and i+1, last as is."""
    m = np.asarray(list(motion), np.float64)
    out = np.zeros_like(m)
    if m.size >= 2:
        out[1:-1] = np.minimum(m[1:-1], m[2:])
        out[-1] = m[-1]
    return out


def sad_motion(sad: float, height: int, width: int) -> float:
    """libvmaf: ``(float)(sad / 256.) / (w * h)`` for a SAD in 1/256 luma units."""
    return float(np.float32(sad / 256.0)) / (width * height)


class TorchVmafMotion:
    """The same motion2 score with the blur and the SAD on a torch device (the GPU).

    Frames are copied into a pinned host buffer (a memcpy on the decode worker's core
    instead of the ~0.5 ms blur of a 720p frame), sent ``batch`` at a time and blurred
    there in exact integer arithmetic: libvmaf's mirror, the vertical then horizontal
    Q16 taps summed exactly in int64, one rounding (half to even) of the 1/256-unit
    value, as the CPU path's single rounding intends. The CPU path (:class:`VmafMotion`)
    rounds a float32 sum, so a pixel within float32 error of a .5 tie can round the
    other way: per-frame motion agrees to ~1e-5 (tests). SADs stay on the device until
    :meth:`per_frame` (one synchronisation per clip).

    On CUDA with Triton (shipped with PyTorch's CUDA builds) the blur and the SAD are two
    fused kernels (``motion_triton``: the same integers, ~40x less device memory traffic
    than the eager ops, which materialise every tap product); otherwise plain torch ops.
    Waits on the device sleep (blocking events) rather than spin a decode worker's core.

    Buffers are cached per thread and device (pinned allocation synchronises the GPU),
    so a decode thread or worker process reuses them from clip to clip.
    """

    version: ClassVar[str] = "vmaf-motion2-v1-torch"
    inline = True  # push() is a memcpy: no motion thread needed

    def __init__(self, device: str = "cuda", batch: int = 16, fused: bool | None = None) -> None:
        import torch

        self.torch, self.device, self.batch = torch, torch.device(device), max(1, batch)
        #: the fused Triton kernels (CUDA only; None = whenever Triton imports)
        self._fused = _triton_motion() if self.device.type == "cuda" and fused is not False else None
        if fused and self._fused is None:
            raise RuntimeError("fused motion kernels need a CUDA device and Triton (shipped with PyTorch's CUDA builds)")
        self._shape: tuple[int, int] | None = None
        self._n = 0  # frames waiting in the host buffer
        self._prev: Any = None  # last blurred frame (device; fused: True, the frame is kept in the buffers)
        self._sads: list[Any] = []
        self._count = 0

    # -- per-thread buffers ----------------------------------------------------
    def _buffers(self, h: int, w: int) -> dict[str, Any]:
        torch, cache = self.torch, _BUFFERS.__dict__
        key = (str(self.device), h, w, self.batch, self._fused is not None)
        if key not in cache:
            cuda = self.device.type == "cuda"
            rows, cols = _mirror(h), _mirror(w)
            host = [torch.empty((self.batch, h, w), dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
            cache[key] = {
                "host": host, "host_np": [t.numpy() for t in host],
                "events": [None, None],
                "slot": 0,
                "stream": torch.cuda.Stream(self.device) if cuda else None,
                "rows": torch.from_numpy(rows).to(self.device), "cols": torch.from_numpy(cols).to(self.device),
                # fused path: blurred frames, slot 0 holding the previous flush's last one
                "blurred": torch.empty((self.batch + 1, h, w), dtype=torch.int32, device=self.device)
                if self._fused is not None else None,
            }
        return cache[key]

    def push(self, luma: np.ndarray) -> None:
        """Add the next frame's luma (uint8, H x W; a strided view is fine)."""
        if _check_luma(luma, self._shape):
            self._shape = luma.shape
            self._buf = self._buffers(*luma.shape)
        buf = self._buf
        if self._n == 0 and (ev := buf["events"][buf["slot"]]) is not None:
            ev.synchronize()  # the copy that last read this host slot is done
        np.copyto(buf["host_np"][buf["slot"]][self._n], luma)
        self._n += 1
        self._count += 1
        if self._n == self.batch:
            self._flush()

    def _blur(self, x: Any) -> Any:
        """(k, H, W) uint8 on the device -> blurred int64 (k, H, W), 1/256 luma units, rounded once."""
        torch, buf = self.torch, self._buf
        h, w = self._shape  # type: ignore[misc]
        p = x.index_select(1, buf["rows"]).to(torch.int32)  # (k, H+4, W) libvmaf mirror
        v = sum(t * p[:, j:j + h] for j, t in enumerate(VMAF_TAPS))  # exact: < 2**24
        v = v.index_select(2, buf["cols"]).to(torch.int64)  # (k, H, W+4)
        s = sum(t * v[:, :, i:i + w] for i, t in enumerate(VMAF_TAPS))  # exact: < 2**40, units of 2**-24 / 256
        q = s >> 24
        r = s & ((1 << 24) - 1)
        half = 1 << 23
        return q + ((r > half) | ((r == half) & (q & 1).bool())).to(torch.int64)

    def _flush(self) -> None:
        if self._n == 0:
            return
        torch, buf = self.torch, self._buf
        slot, n = buf["slot"], self._n
        stream = buf["stream"]
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            x = buf["host"][slot][:n].to(self.device, non_blocking=True)
            if stream is not None:
                ev = torch.cuda.Event(blocking=True)  # waiting on it sleeps instead of spinning a core
                ev.record(stream)
                buf["events"][slot] = ev
            if self._fused is not None:
                self._fused_flush(x, buf["blurred"])
            else:
                self._eager_flush(x)
        buf["slot"] = slot ^ 1
        self._n = 0

    def _fused_flush(self, x: Any, blurred: Any) -> None:
        """Blur into ``blurred[1:n+1]`` and SAD against the frame before (``blurred[0]``)."""
        n = x.shape[0]
        self._fused.blur(x, blurred[1:n + 1], self._buf["rows"], self._buf["cols"])
        first = 0 if self._prev is not None else 1  # a clip's first frame has no SAD
        if n > first:
            sads = self.torch.empty(n - first, dtype=self.torch.int64, device=self.device)
            self._fused.sad(blurred[first:n + 1], sads)
            self._sads.append(sads)
        blurred[0].copy_(blurred[n])
        self._prev = True  # the last blurred frame is in blurred[0]

    def _eager_flush(self, x: Any) -> None:
        """The same in plain torch ops (the CPU, and CUDA without Triton)."""
        b = self._blur(x)
        seq = b if self._prev is None else self.torch.cat([self._prev[None], b])
        if seq.shape[0] > 1:
            self._sads.append((seq[1:] - seq[:-1]).abs().sum(dim=(1, 2)))
        self._prev = b[-1]

    def per_frame(self) -> np.ndarray:
        """The motion2 score of every pushed frame (float64); waits for the device."""
        self._flush()
        if not self._count:
            return np.zeros(0)
        torch, stream = self.torch, self._buf["stream"]
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with ctx:
            if stream is not None:  # sleep until the SADs are in, rather than spin in .cpu()
                done = torch.cuda.Event(blocking=True)
                done.record(stream)
                done.synchronize()
            sads = torch.cat(self._sads).cpu().numpy() if self._sads else np.zeros(0, np.int64)
        h, w = self._shape  # type: ignore[misc]
        return motion2([0.0] + [sad_motion(float(s), h, w) for s in sads])


#: TorchVmafMotion's host and device buffers, per thread (pinned allocation synchronises the GPU)
_BUFFERS = threading.local()


def _triton_motion() -> Any:
    """The fused CUDA kernels (``motion_triton``), or None where Triton is missing."""
    try:
        from . import motion_triton
    except ImportError:
        return None
    return motion_triton


def vmaf_motion(lumas: Iterable[np.ndarray]) -> np.ndarray:
    """Per-frame motion2 of a sequence of 8-bit luma frames."""
    scorer = VmafMotion()
    for luma in lumas:
        scorer.push(luma)
    return scorer.per_frame()


def motion_passes(score: float, lo: float = 2.0, hi: float = 14.0) -> tuple[bool, str]:
    """Keep when ``lo <= score <= hi`` (SPEC.md §2); otherwise ``(False, reason)``."""
    if not np.isfinite(score):
        return False, f"motion {score} is not a number (no frames scored)"
    if score < lo:
        return False, f"motion {score:.2f} < {lo}"
    if score > hi:
        return False, f"motion {score:.2f} > {hi}"
    return True, ""
