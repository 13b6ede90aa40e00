"""Scene splitting (SPEC.md §1): shot boundaries of a source video, then 3-15 s clip spans.

A pure library: a path in, a :class:`SceneList` out (:func:`detect_scenes`), and scenes in,
clip spans out (:func:`plan_clips`). The Kafka stage wraps these.

What it reproduces. The reference scripts run PySceneDetect with two detectors in one pass:
``ContentDetector(threshold=21, min_scene_len=15)`` and ``AdaptiveDetector(adaptive_threshold=3,
min_scene_len=15, luma_only=True)`` with ``frame_skip=2``. Both scores are computed here the
way PySceneDetect computes them (``scenedetect/detectors/content_detector.py`` and
``adaptive_detector.py``): on frames downscaled to about 256 px wide, converted to OpenCV HSV,

* ``content_val`` = mean over the H, S and V channels of the mean absolute pixel difference
  to the previous analysed frame (weights 1, 1, 1, edges 0), a cut when >= 21;
* the adaptive ratio = the luma-only ``content_val`` (V channel) of a frame divided by the mean
  of the 2 analysed frames before and the 2 after it (255 when that mean is 0), a cut when
  >= 3.0 and the luma ``content_val`` >= 15 (PySceneDetect's ``min_content_val``).

What it changes, and why.

* The paper's fix for fades and dissolves: adjacent-frame differences of a 1 s dissolve are a
  tenth of a cut's, so neither detector fires. Here every analysed frame t is also compared with
  t-k for a few intervals k (0.3, 0.6, 1.2 and 2 s by default), with the same ``content_val``.
  A window (t-k, t) is a dissolve when three signs agree: its change is cut-sized (>= 21) and
  not smaller than over the windows of the same length just before and after it; its middle
  frame is close to a blend ``(1-w) A + w B`` of the window's ends with ``w`` near 0.5 (a pan
  is not); and the middle frame's luma variance dips (about ``(1-w)^2 var A + w^2 var B``;
  motion does not lower it). Fades through black are runs of dark, flat frames between brighter
  ones. One cut is placed per transition, at its middle (where the blend weight crosses 0.5),
  and the transition's frames are recorded on both neighbouring scenes (``lead_in`` /
  ``lead_out``) so that :func:`plan_clips` keeps them out of the clips.
* With frames compared 3 or more apart, the fixed content threshold also fires on fast camera
  motion and on things crossing close to the lens. A content cut must also be a spike: its
  ``content_val`` at least ``content_min_ratio`` (1.65) times the mean of its 2 + 2 neighbours,
  the adaptive detector's test with a lower bar. (On the test videos, true cuts the adaptive
  detector misses score 1.8 or more, motion 1.54 at most.) ``content_min_ratio=0`` gives the
  reference behaviour back.
* Minimum scene length: candidates are taken fades first, then hard cuts, then dissolves, the
  strongest first, each kept when it is ``min_scene_len`` frames from every kept cut (and from
  the start) and outside every kept transition. PySceneDetect's merge filter instead lets a
  weak motion trigger swallow the real cut 10 frames later.
* Speed: one decode with PyAV (threaded), frames that no other frame references are never
  decoded (``skip_frame="NONREF"``: the B-frames of a B-pyramid; exact, as nothing depends on
  them), the in-loop deblocking filter is skipped, and swscale downscales straight from YUV.
  As in the reference, a frame is analysed once ``frame_skip + 1`` frames have passed since the
  last analysed one. Only a bounded window of small analysis frames is held (the longest
  interval plus one, ~2 MB), per-frame scores are a few floats, and the decisions are made on
  those arrays with numpy at the end. Decoding the reference frames is the floor (about 55% of
  the decode of every frame, which is most of PySceneDetect's time); not decoding any of them
  (all B-frames, "BIDIR") would corrupt the P-frames that reference B-frames (bikes.mp4), and
  splitting one video into keyframe segments decoded in parallel processes was slower than one
  decode on this 2-core machine. See bench/bench_split.py and docs/benchmarks.md.
* A hard cut is placed on the exact frame: every decoded frame gets a tiny luma thumbnail (a
  strided view), and the cut goes to the decoded frame with the largest change between the two
  analysed frames that straddle it.

Frame numbers come from presentation timestamps at the stream's average frame rate (frame
``round((pts - start) * time_base * fps)``); for constant-frame-rate video that is the decode
order count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import av
import cv2
import numpy as np

VERSION = "scenes-v1"

CutKind = Literal["cut", "fade", "dissolve"]
# swscale's area averaging: scale-aware (no aliasing from 4K down to 256 px). Its
# FAST_BILINEAR costs ~0.25 ms less per 720p frame, which is lost in the decode's noise here.
_INTERP = "AREA"

# Pixel formats whose first plane is 8-bit luma that can be viewed without conversion.
_PLANAR_8BIT = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
)


@dataclass(frozen=True)
class SceneConfig:
    """Scene cutting and clip planning settings; defaults are the paper's (SPEC.md §1)."""

    # --- reference detectors (PySceneDetect, as in the reference scripts) ---
    content_threshold: float = 21.0
    """ContentDetector threshold on the mean HSV difference."""
    adaptive_threshold: float = 3.0
    """AdaptiveDetector threshold on the luma score / rolling mean ratio."""
    adaptive_min_content_val: float = 15.0
    """AdaptiveDetector's ``min_content_val`` (PySceneDetect default)."""
    adaptive_window: int = 2
    """AdaptiveDetector's ``window_width``: analysed frames on each side of the mean."""
    min_scene_len: int = 15
    """Minimum scene length in frames; also no cut in the first ``min_scene_len`` frames."""
    frame_skip: int = 2
    """Analyse one frame in ``frame_skip + 1``."""
    analysis_width: int = 256
    """Width of the analysis frames (PySceneDetect's auto-downscale target)."""

    # --- fixes ---
    content_min_ratio: float = 1.65
    """A content cut must be a spike: content_val / mean of 2+2 neighbours >= this (0: off)."""
    intervals_s: tuple[float, ...] = (0.3, 0.6, 1.2, 2.0)
    """Multi-frame comparison intervals (seconds): frame t is compared with t - k."""
    gradual_threshold: float = 21.0
    """A gradual transition changes the content at least this much over its window."""
    gradual_flank_ratio: float = 0.8
    """... and more (this many times) than over the windows just before and after it."""
    blend_max_residual: float = 0.5
    """Dissolve test: the middle frame is a blend of the ends up to this relative residual."""
    dissolve_max_variance_dip: float = 0.75
    """Dissolve test: the middle frame's luma variance / the ends' (interpolated) at most."""
    dissolve_min_score: float = 0.3
    """Dissolve evidence, all three signs together: (1 - dip) * (1 - |alpha - 0.5|) *
    change / flank change, at least this."""
    blend_alpha_range: tuple[float, float] = (0.2, 0.8)
    """Dissolve test: the blend weight of the middle frame lies in this range."""
    fade_max_luma: float = 30.0
    """A fade's dark frames have a mean luma (0-255) at most this ..."""
    fade_max_std: float = 14.0
    """... and a luma standard deviation at most this (a flat frame) ..."""
    fade_min_contrast: float = 30.0
    """... and the frames around the dark run are at least this much brighter."""

    # --- decoding ---
    skip_nonref: bool = True
    """Do not decode frames that no other frame references (exact: others decode the same)."""
    skip_loop_filter: bool = True
    """Skip the in-loop deblocking filter while decoding (faster; invisible at 256 px)."""
    decode_threads: int = 0
    """Decoder threads: 0 lets FFmpeg pick (frame threads, one per core: lowest latency for one
    video on an idle machine); 1 decodes in the calling thread, which costs 15-20% less
    CPU per video, the better choice when several videos are split side by side."""

    # --- clip planning ---
    trim_s: float = 0.3
    """Trimmed from the start and the end of every scene."""
    min_clip_s: float = 3.0
    """Shortest clip kept (also the shortest remainder of a chopped scene)."""
    max_clip_s: float = 15.0
    """Longest clip; longer scenes are chopped into consecutive pieces of this length."""


@dataclass(frozen=True)
class Cut:
    """One shot boundary: ``frame`` is the first frame of the new scene."""

    frame: int
    kind: CutKind
    span: tuple[int, int]
    """Frames of the transition, ``[start, end)``; empty (``frame, frame``) for a hard cut."""
    score: float


@dataclass(frozen=True)
class Scene:
    """A run of frames ``[frame_start, frame_end)`` between two boundaries."""

    frame_start: int
    frame_end: int
    lead_in: int = 0
    """Frames at the start that still belong to a gradual transition (fade, dissolve)."""
    lead_out: int = 0
    """Frames at the end that already belong to a gradual transition."""

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start


@dataclass
class SceneList:
    """The scenes of one video (they tile ``[0, num_frames)``) and the cuts between them."""

    scenes: list[Scene]
    cuts: list[Cut]
    fps: float
    num_frames: int
    width: int
    height: int
    frames_decoded: int = 0
    frames_analysed: int = 0
    version: str = VERSION

    def __iter__(self) -> Iterator[Scene]:
        return iter(self.scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> Scene:
        return self.scenes[i]

    @property
    def cut_frames(self) -> list[int]:
        """First frame of every scene but the first."""
        return [c.frame for c in self.cuts]


@dataclass(frozen=True)
class ClipSpan:
    """One planned clip: frames ``[frame_start, frame_end)`` and their times in seconds."""

    frame_start: int
    frame_end: int
    timestamp_start: float
    timestamp_end: float
    scene_index: int

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start


class SceneDetectionError(ValueError):
    """The video cannot be analysed (no video stream, undecodable, no frames)."""


# --------------------------------------------------------------------------------------------
# Streaming analysis: one pass over the decoded frames, a bounded window of analysis frames.
# --------------------------------------------------------------------------------------------


@dataclass
class _Scores:
    """Per analysed frame scalars; everything the decisions need (a few floats per frame)."""

    frame: list[int] = field(default_factory=list)
    content: list[float] = field(default_factory=list)  # HSV content_val to previous sample
    luma: list[float] = field(default_factory=list)  # V-channel content_val to previous sample
    y_mean: list[float] = field(default_factory=list)
    y_std: list[float] = field(default_factory=list)
    exact: list[int] = field(default_factory=list)  # decoded frame with the largest jump since prev
    interval: dict[int, list[float]] = field(default_factory=dict)  # k -> content_val(t-k, t)
    alpha: dict[int, list[float]] = field(default_factory=dict)  # k -> blend weight of middle
    resid: dict[int, list[float]] = field(default_factory=dict)  # k -> relative blend residual


def _plane_view(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """An 8-bit plane as a (height, width) view over the frame buffer (no copy)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def _content_val(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """PySceneDetect's content_val (mean of H, S, V mean abs differences) and its V-only part."""
    # cv2.absdiff on uint8 is exact, and much cheaper than numpy's int32 round trip.
    h, s, v, _ = cv2.mean(cv2.absdiff(a, b))
    return (h + s + v) / 3.0, v


class _Analyzer:
    """Consumes decoded frames in order; keeps a bounded ring of analysis frames and appends a
    few scores per analysed frame to :class:`_Scores`."""

    def __init__(self, cfg: SceneConfig, fps: float, width: int, height: int) -> None:
        self.cfg = cfg
        self.step = cfg.frame_skip + 1
        # Analysis size: ~analysis_width wide, even sides (I420), aspect kept.
        aw = min(width, cfg.analysis_width)
        ah = max(2, round(height * aw / width))
        self.size = (aw - aw % 2, ah - ah % 2)
        tw = 32
        self.tiny_size = (tw, max(2, round(tw * height / width)))
        # Intervals in analysed frames (k >= 2 so that a window has a middle frame).
        ks = {max(2, round(s * fps / self.step)) for s in cfg.intervals_s}
        self.ks = sorted(ks)
        # The bounded window: the last kmax + 1 analysis frames, in rings (~2 MB at 256 px).
        self.ring_len = self.ks[-1] + 1
        self.hsv_ring = np.zeros((self.ring_len, self.size[1], self.size[0], 3), np.uint8)
        self.tiny_ring = np.zeros((self.ring_len, self.tiny_size[0] * self.tiny_size[1]), np.float32)
        self.count = 0
        self.scores = _Scores(
            interval={k: [] for k in self.ks},
            alpha={k: [] for k in self.ks},
            resid={k: [] for k in self.ks},
        )
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.last_sampled = -1
        self.thumb_stride = max(1, width // 64)
        self.prev_thumb: np.ndarray | None = None
        self.best_jump = (-1.0, -1)  # (thumbnail change, frame) since the last analysed frame
        self.decoded = 0

    def add(self, idx: int, frame: av.VideoFrame) -> None:
        """Feed the next decoded frame (increasing ``idx``)."""
        self.decoded += 1
        self._track_jump(idx, frame)
        # The reference's frame skip: analyse a frame once `step` frames have passed since the
        # last analysed one (every 3rd frame; every 4th when only every 2nd is decoded).
        if self.last_sampled < 0 or idx - self.last_sampled >= self.step:
            self.last_sampled = idx
            self._analyse(idx, frame)

    def _track_jump(self, idx: int, frame: av.VideoFrame) -> None:
        # A strided view of the luma plane (~64 px wide): ~10 us, so every decoded frame can
        # afford it; it places hard cuts on the exact frame between two analysed frames.
        if frame.format.name not in _PLANAR_8BIT:
            return
        s = self.thumb_stride
        thumb = _plane_view(frame.planes[0])[::s, ::s].copy()
        if self.prev_thumb is not None and self.prev_thumb.shape == thumb.shape:
            jump = cv2.mean(cv2.absdiff(thumb, self.prev_thumb))[0]
            if jump > self.best_jump[0]:
                self.best_jump = (jump, idx)
        self.prev_thumb = thumb

    def _analyse(self, idx: int, frame: av.VideoFrame) -> None:
        w, h = self.size
        # swscale downscales straight from YUV; no full-size BGR frame is ever made.
        i420 = self.reformatter.reformat(
            frame, width=w, height=h, format="yuv420p", interpolation=_INTERP
        ).to_ndarray()
        hsv = cv2.cvtColor(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2HSV)
        y = i420[:h]
        y_mean, y_std = cv2.meanStdDev(y)
        tiny = cv2.resize(y, self.tiny_size, interpolation=cv2.INTER_AREA)

        sc = self.scores
        n = self.count  # analysed frames before this one
        R = self.ring_len
        if n:
            c, lv = _content_val(self.hsv_ring[(n - 1) % R], hsv)
        else:
            c = lv = 0.0  # PySceneDetect scores the first frame 0
        sc.frame.append(idx)
        sc.content.append(c)
        sc.luma.append(lv)
        # Limited-range luma to 0..255, so that black is 0 for the fade test.
        sc.y_mean.append((float(y_mean[0, 0]) - 16.0) * 255.0 / 219.0)
        sc.y_std.append(float(y_std[0, 0]) * 255.0 / 219.0)
        sc.exact.append(self.best_jump[1] if self.best_jump[1] >= 0 else idx)
        self.best_jump = (-1.0, -1)

        # The interval comparisons: frame t against t-k for every k; the blend test of the
        # window's middle frame t-k//2, batched over k.
        ks = [k for k in self.ks if n >= k]
        for k in self.ks[len(ks) :]:
            sc.interval[k].append(math.nan)
            sc.alpha[k].append(0.0)
            sc.resid[k].append(1.0)
        if ks:
            cur = tiny.reshape(-1).astype(np.float32)
            a_t = self.tiny_ring[[(n - k) % R for k in ks]]
            m_t = self.tiny_ring[[(n - k // 2) % R for k in ks]]
            d = cur - a_t
            r = m_t - a_t
            dd = np.einsum("kp,kp->k", d, d)
            ok = dd > 1e-6
            alpha = np.where(ok, np.einsum("kp,kp->k", r, d) / np.where(ok, dd, 1.0), 0.0)
            res = np.linalg.norm(r - alpha[:, None] * d, axis=1) / np.sqrt(np.where(ok, dd, 1.0))
            res = np.where(ok, res, 1.0)
            for j, k in enumerate(ks):
                e, _ = _content_val(self.hsv_ring[(n - k) % R], hsv)
                sc.interval[k].append(e)
                sc.alpha[k].append(float(alpha[j]))
                sc.resid[k].append(float(res[j]))
        self.hsv_ring[n % R] = hsv
        self.tiny_ring[n % R] = tiny.reshape(-1)
        self.count = n + 1


# --------------------------------------------------------------------------------------------
# Decisions on the per-frame score arrays (vectorised).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    frame: int
    kind: CutKind
    span: tuple[int, int]
    score: float
    priority: int  # fades first, then hard cuts, then dissolves


def _rolling_ratio(x: np.ndarray, w: int, min_val: float) -> np.ndarray:
    """AdaptiveDetector's ratio: x[i] / mean(x[i-w..i+w] without x[i]), 255 where that mean is 0
    and x[i] >= min_val. Near the ends the window is cut short (PySceneDetect skips those
    frames, so it misses a cut in the last ``w`` analysed frames); at least one neighbour on
    each side is required, so the first and last frames get 0."""
    n = len(x)
    out = np.zeros(n)
    if n < 3:
        return out
    csum = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, n - 1)
    lo = np.maximum(i - w, 0)
    hi = np.minimum(i + w, n - 1)
    avg = (csum[hi + 1] - csum[lo] - x[i]) / (hi - lo)
    zero = np.abs(avg) < 1e-5
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(zero, np.where(x[i] >= min_val, 255.0, 0.0), np.minimum(x[i] / avg, 255.0))
    out[i] = r
    return out


def _hard_cut_candidates(sc: _Scores, cfg: SceneConfig) -> list[_Candidate]:
    c = np.asarray(sc.content)
    lv = np.asarray(sc.luma)
    w = cfg.adaptive_window
    luma_ratio = _rolling_ratio(lv, w, cfg.adaptive_min_content_val)
    adaptive = (luma_ratio >= cfg.adaptive_threshold) & (lv >= cfg.adaptive_min_content_val)
    content = c >= cfg.content_threshold
    if cfg.content_min_ratio > 0:
        content &= _rolling_ratio(c, w, cfg.content_threshold) >= cfg.content_min_ratio
    hits = np.flatnonzero(adaptive | content)
    strength = np.maximum(c / cfg.content_threshold, luma_ratio / cfg.adaptive_threshold)
    out = []
    for i in hits:
        f = sc.exact[i]
        out.append(_Candidate(f, "cut", (f, f), float(strength[i]), 2))
    return out


def _dark(sc: _Scores, cfg: SceneConfig) -> np.ndarray:
    """Analysed frames that are black: dark and flat."""
    return (np.asarray(sc.y_mean) <= cfg.fade_max_luma) & (np.asarray(sc.y_std) <= cfg.fade_max_std)


def _fade_candidates(
    sc: _Scores, cfg: SceneConfig, ramp: int
) -> tuple[list[_Candidate], int, int | None]:
    """Fades through black: runs of dark, flat frames with brighter frames on both sides.

    Also returns where a fade in from black at the very start ends (0: none) and where a fade
    out to black at the very end starts (None: none); those are no cuts, but no clip material.
    """
    y = np.asarray(sc.y_mean)
    f = sc.frame
    n = len(y)
    dark = _dark(sc, cfg)
    cands: list[_Candidate] = []
    fade_in_end, fade_out_start = 0, None
    i = 0
    while i < n:
        if not dark[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and dark[j + 1]:
            j += 1
        level = float(y[i : j + 1].mean())
        before = y[max(0, i - ramp) : i]
        after = y[j + 1 : j + 1 + ramp]
        bright_before = before.size > 0 and before.max() >= level + cfg.fade_min_contrast
        bright_after = after.size > 0 and after.max() >= level + cfg.fade_min_contrast
        # Extend over the ramps: while the luma keeps rising away from the dark run.
        a = i
        while a > 0 and i - a < ramp and y[a - 1] > y[a] + 0.5:
            a -= 1
        b = j
        while b + 1 < n and b - j < ramp and y[b + 1] > y[b] + 0.5:
            b += 1
        span = (f[a], f[b] + 1)
        if bright_before and bright_after:
            mid = (f[i] + f[j] + 1) // 2
            contrast = min(before.max(), after.max()) - level
            cands.append(_Candidate(mid, "fade", span, float(contrast), 3))
        # A dark run with nothing brighter after (before) it is no fade in (out): it is a
        # dark scene, kept as material for the luminance filter to judge.
        elif i == 0 and bright_after:
            fade_in_end = span[1]
        elif j == n - 1 and bright_before:
            fade_out_start = span[0]
        i = j + 1
    return cands, fade_in_end, fade_out_start


def _dissolve_candidates(sc: _Scores, cfg: SceneConfig) -> list[_Candidate]:
    """Dissolves: windows (t-k, t) whose middle frame is a blend of the two ends.

    Three signs, all needed: the content changes cut-size over the window, and more than over
    the windows of the same length before and after it; the middle frame is close to a blend of
    the ends (what a pan is not); and its luma variance dips below the ends' (the variance of
    ``(1-w) A + w B`` is about ``(1-w)^2 var A + w^2 var B``; motion does not lower it).
    """
    f = np.asarray(sc.frame)
    n = len(f)
    var = np.asarray(sc.y_std) ** 2
    # A window with a black end is a fade out or in: the fade test's business (and, at the start
    # or end of the video, no cut at all).
    dark = _dark(sc, cfg)
    lo, hi = cfg.blend_alpha_range
    out: list[_Candidate] = []
    for k, e_list in sc.interval.items():
        if n <= k:
            continue
        e = np.asarray(e_list)
        before = np.full(n, np.nan)
        after = np.full(n, np.nan)
        before[k:] = e[:-k]  # window (t-2k, t-k)
        after[:-k] = e[k:]  # window (t, t+k)
        flank = np.fmax(before, after)  # NaN only when both windows fall outside the video
        alpha = np.asarray(sc.alpha[k])
        resid = np.asarray(sc.resid[k])
        i = np.arange(n)
        a = np.clip(i - k, 0, n - 1)
        m = np.clip(i - k // 2, 0, n - 1)
        w = np.clip(alpha, 0.0, 1.0)
        expected = (1.0 - w) * var[a] + w * var[i]
        dip = var[m] / np.maximum(expected, 1e-6)
        with np.errstate(invalid="ignore"):
            ok = (
                (i >= k)
                & (e >= cfg.gradual_threshold)
                & (e >= cfg.gradual_flank_ratio * flank)
                & (resid <= cfg.blend_max_residual)
                & (alpha >= lo)
                & (alpha <= hi)
                & (dip <= cfg.dissolve_max_variance_dip)
                & ~dark[a]
                & ~dark[i]
            )
        for j in np.flatnonzero(ok):
            # Score: depth of the variance dip, how centred the transition is in the window,
            # and how much the window stands out from its flanks.
            score = float(
                (1.0 - dip[j])
                * (1.0 - abs(alpha[j] - 0.5))
                * (e[j] / max(np.nan_to_num(flank[j], nan=1.0), 1.0))
            )
            if score < cfg.dissolve_min_score:
                continue
            # The cut goes where the middle frame's blend weight crosses 0.5 as the window
            # slides (a linear dissolve is half way there), interpolated between neighbours.
            a_f, b_f = int(f[j - k]), int(f[j])
            mid = float(f[j - k // 2])
            nb = j + 1 if alpha[j] < 0.5 else j - 1
            if k <= nb < n and nb - k // 2 >= 0 and (alpha[nb] - 0.5) * (alpha[j] - 0.5) <= 0:
                frac = (0.5 - alpha[j]) / (alpha[nb] - alpha[j]) if alpha[nb] != alpha[j] else 0
                mid += frac * (f[nb - k // 2] - mid)
            out.append(_Candidate(int(round(mid)), "dissolve", (a_f + 1, b_f), score, 1))
    return out


def _select(cands: list[_Candidate], cfg: SceneConfig, tol: int) -> list[_Candidate]:
    """Greedy: by priority then score; a cut must keep min_scene_len from every kept cut and
    from the start, and may not fall inside a kept transition."""
    kept: list[_Candidate] = []
    for c in sorted(cands, key=lambda c: (-c.priority, -c.score, c.frame)):
        if c.frame < cfg.min_scene_len:
            continue
        clash = False
        for k in kept:
            if abs(c.frame - k.frame) < cfg.min_scene_len:
                clash = True
                break
            if k.span[0] - tol <= c.frame <= k.span[1] + tol:
                clash = True
                break
            if c.span[0] <= k.frame <= c.span[1]:
                clash = True
                break
        if not clash:
            kept.append(c)
    return sorted(kept, key=lambda c: c.frame)


def _open(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    p = Path(path)
    if not p.is_file():
        raise SceneDetectionError(f"{path!r}: no such file")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as e:
        raise SceneDetectionError(f"{path!r}: cannot open: {e}") from e
    if not container.streams.video:
        container.close()
        raise SceneDetectionError(f"{path!r}: no video stream")
    return container, container.streams.video[0]


def detect_scenes(path: str | Path, cfg: SceneConfig = SceneConfig()) -> SceneList:
    """Find the shot boundaries of the video at ``path`` in one streaming decode.

    Hard cuts use the reference detectors' scores (content and adaptive, frame skip 2, see the
    module docstring); fades and dissolves use the interval comparison. Scenes tile the whole
    video; a cut is the first frame of its new scene, and no two cuts are closer than
    ``cfg.min_scene_len`` frames.

    Raises:
        SceneDetectionError: no such file, no video stream, nothing decodable.
    """
    path = str(path)
    container, stream = _open(path)
    try:
        return _detect(container, stream, cfg, path)
    except av.error.FFmpegError as e:
        raise SceneDetectionError(f"{path!r}: decoding failed: {e}") from e
    finally:
        container.close()


def _detect(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    cfg: SceneConfig,
    path: str,
) -> SceneList:
    """The decode loop of :func:`detect_scenes`, then the decisions."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise SceneDetectionError(f"{path!r}: unknown frame rate")
    fps = float(rate)
    stream.thread_type = "AUTO"
    if cfg.decode_threads:
        stream.thread_count = cfg.decode_threads
    skipping = cfg.skip_nonref
    if skipping:
        # Frames no other frame references can be left undecoded without changing any other
        # frame (unlike skipping all B-frames: x264's default B-pyramid lets P-frames reference
        # B-frames). With x264 defaults that is about 40% of the frames.
        stream.codec_context.skip_frame = "NONREF"
    if cfg.skip_loop_filter:
        stream.codec_context.options["skip_loop_filter"] = "all"
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise SceneDetectionError(f"{path!r}: video stream without a size")
    analyzer = _Analyzer(cfg, fps, width, height)
    # Frame number from the timestamp; a float scale, as Fraction arithmetic per frame is slow.
    scale = float(stream.time_base or Fraction(1, 1)) * fps
    start = stream.start_time
    last = -1
    for frame in container.decode(stream):
        if frame.pts is None:
            idx = last + 1
        else:
            if start is None:
                start = frame.pts
            idx = round((frame.pts - start) * scale)
        if idx <= last:
            continue  # duplicate timestamp (or above the nominal rate): skip
        if skipping and last >= 0 and idx - last > 2 * analyzer.step + 1:
            # A stream whose non-reference frames are most of it (disposable P-frames) would
            # leave holes the detectors cannot see through: decode everything from here on.
            stream.codec_context.skip_frame = "DEFAULT"
            skipping = False
        last = idx
        analyzer.add(idx, frame)
    if last < 0:
        raise SceneDetectionError(f"{path!r}: no decodable video frame")

    num_frames = last + 1
    # Trailing frames skipped as non-reference are still frames of the video; trust the header
    # count only that far (a truncated file must not grow phantom frames).
    if cfg.skip_nonref and stream.frames and 0 < stream.frames - num_frames <= analyzer.step + 2:
        num_frames = int(stream.frames)

    cuts, scenes = _decide(analyzer.scores, cfg, analyzer.step, analyzer.ks[-1], num_frames)
    return SceneList(
        scenes=scenes,
        cuts=cuts,
        fps=fps,
        num_frames=num_frames,
        width=width,
        height=height,
        frames_decoded=analyzer.decoded,
        frames_analysed=len(analyzer.scores.frame),
    )


def _decide(
    sc: _Scores, cfg: SceneConfig, step: int, ramp: int, num_frames: int
) -> tuple[list[Cut], list[Scene]]:
    """All the decisions, on the per-frame score arrays only."""
    fades, fade_in_end, fade_out_start = _fade_candidates(sc, cfg, ramp)
    cands = fades + _hard_cut_candidates(sc, cfg) + _dissolve_candidates(sc, cfg)
    cuts = [Cut(c.frame, c.kind, c.span, c.score) for c in _select(cands, cfg, step)]
    return cuts, _scenes_from_cuts(cuts, num_frames, fade_in_end, fade_out_start)


def _scenes_from_cuts(
    cuts: Sequence[Cut], num_frames: int, fade_in_end: int = 0, fade_out_start: int | None = None
) -> list[Scene]:
    bounds = [0, *[c.frame for c in cuts], num_frames]
    scenes = []
    last = len(bounds) - 2
    for i in range(last + 1):
        a, b = bounds[i], bounds[i + 1]
        lead_in = max(0, cuts[i - 1].span[1] - a) if i > 0 else min(fade_in_end, b) - a
        lead_out = max(0, b - cuts[i].span[0]) if i < last else 0
        if i == last and fade_out_start is not None:
            lead_out = max(lead_out, b - max(fade_out_start, a))
        scenes.append(Scene(a, b, max(0, lead_in), lead_out))
    return scenes


# --------------------------------------------------------------------------------------------
# Clip planning.
# --------------------------------------------------------------------------------------------


def plan_clips(
    scenes: SceneList | Sequence[Scene] | Sequence[tuple[int, int]],
    fps: float,
    cfg: SceneConfig = SceneConfig(),
) -> list[ClipSpan]:
    """Turn scenes into clip spans (SPEC.md §1).

    Every scene loses ``trim_s`` (0.3 s) at each end, or its transition frames when those are
    more (``lead_in`` / ``lead_out``). What is left is kept when it lasts at least
    ``min_clip_s`` (3 s); longer than ``max_clip_s`` (15 s), it is chopped into consecutive
    15 s pieces and a remainder is kept only when it lasts at least 3 s.

    Frame ranges are end-exclusive; times are ``frame / fps``. In frames: the trim is
    ``ceil(trim_s * fps)`` (at least 0.3 s), the shortest clip ``ceil(min_clip_s * fps)`` (at
    least 3 s) and a piece ``floor(max_clip_s * fps)`` (at most 15 s).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    eps = 1e-9  # 0.3 * 30 must be 9 frames, not 10
    trim = math.ceil(cfg.trim_s * fps - eps)
    min_len = math.ceil(cfg.min_clip_s * fps - eps)
    max_len = math.floor(cfg.max_clip_s * fps + eps)
    clips: list[ClipSpan] = []
    for si, sc in enumerate(scenes):
        if isinstance(sc, Scene):
            a, b, lead_in, lead_out = sc.frame_start, sc.frame_end, sc.lead_in, sc.lead_out
        else:
            a, b = sc
            lead_in = lead_out = 0
        start = a + max(trim, lead_in)
        end = b - max(trim, lead_out)
        length = end - start
        if length < min_len:
            continue
        pos = start
        while end - pos >= min_len:
            piece_end = min(pos + max_len, end)
            clips.append(ClipSpan(pos, piece_end, pos / fps, piece_end / fps, si))
            pos = piece_end
    return clips
