"""Clip materialisation (SPEC.md §1): cut a clip out of its source and re-encode it to the
one uniform format of the dataset (default H.265 in MP4 at 1280x720, the released size).

A pure library (paths and frame numbers in, a :class:`ClipFile` out); the ``split`` stage
calls it when ``split.materialize`` is on.

- **Frame-accurate.** Frames are numbered the way the scene detector and the scorers number
  them (``round((pts - start) * time_base * fps)`` at the stream's average rate), and the
  clip holds exactly frames ``[frame_start, frame_end)``: the decoder seeks to the keyframe
  before the start and drops what comes before. Variable-frame-rate input is resampled onto
  the constant grid (a slot repeats the latest frame shown at its time), so the clip's frame
  count is always ``frame_end - frame_start``.
- **Upright and uniform.** A rotated phone video (display-matrix rotation) is turned upright
  first; then the frame is scaled to cover the target size and centre-cropped (``fit=crop``,
  no black bars that would skew the aesthetic and OCR scores), letterboxed (``pad``) or
  stretched (``stretch``), all in one FFmpeg filter graph.
- **Encoder.** ``encoder=auto`` tries the GPU encoder (``hevc_nvenc``) by opening it on one
  frame, and falls back to software (``libx265``) when it is missing or does not open (the
  PyAV wheels list NVENC even where the driver's video library is absent).
- **Atomic.** The clip is written to a hidden ``.{name}.part-{pid}`` beside its final name
  and renamed only once complete, so a crash never leaves a half clip that looks done; a
  clip that already exists with the right frame count is not encoded again (a redelivered
  video costs a probe per clip).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from spatialvid.config import TranscodeConfig
from spatialvid.producers.probe import UnreadableVideo, VideoError

log = logging.getLogger(__name__)

#: FFmpeg encoders to try, best first, per configured codec.
ENCODERS: dict[str, tuple[str, ...]] = {
    "hevc": ("hevc_nvenc", "libx265"),
    "h264": ("h264_nvenc", "libx264"),
}
#: The codec name a decoder reports for each configured codec.
CODEC_NAMES = {"hevc": "hevc", "h264": "h264"}
#: Tolerated shortfall (frames) at the very end of a source, where the last frame's duration
#: rounds differently between containers; the last decoded frame is repeated.
END_SLACK = 2


class TranscodeError(VideoError):
    """A clip could not be cut or encoded; the message says which and why."""


class TruncatedSource(TranscodeError):
    """The source ended (or broke) before the clip's last frame."""


class OutsideStore(TranscodeError):
    """A clip path would land outside the artifact store."""


@dataclass(frozen=True)
class ClipFile:
    """A materialised clip: where it is and what it holds."""

    path: Path
    codec: str
    encoder: str
    width: int
    height: int
    fps: float
    num_frames: int
    reused: bool = False


# --------------------------------------------------------------------------------------------
# Encoder choice
# --------------------------------------------------------------------------------------------


def _encoder_opens(name: str) -> bool:
    """Whether ``name`` encodes one small frame here (NVENC needs a GPU and its driver library)."""
    if name not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        if name == "libx265":
            ctx.options = {"x265-params": "log-level=error"}
        frame = av.VideoFrame.from_ndarray(np.zeros((144 * 3 // 2, 256), np.uint8), format="yuv420p")
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
        return True
    except Exception as exc:  # any failure to open means: not usable here
        log.info("encoder %s does not open here: %s", name, exc)
        return False


@functools.lru_cache(maxsize=None)
def pick_encoder(codec: str = "hevc", encoder: str = "auto") -> str:
    """The FFmpeg encoder for ``codec``: ``encoder`` itself, or with ``auto`` the first of
    :data:`ENCODERS` that opens here (GPU first)."""
    if encoder != "auto":
        if not _encoder_opens(encoder):
            raise TranscodeError(f"encoder {encoder!r} is not available or does not open here; "
                                 f"set transcode.encoder = \"auto\"")
        return encoder
    if codec not in ENCODERS:
        raise TranscodeError(f"transcode.codec {codec!r} is not supported; use one of {sorted(ENCODERS)}")
    for name in ENCODERS[codec]:
        if _encoder_opens(name):
            return name
    raise TranscodeError(f"no {codec} encoder opens here (tried {', '.join(ENCODERS[codec])}); "
                         "install a PyAV/FFmpeg build with libx265")


def _encoder_options(name: str, tc: TranscodeConfig) -> dict[str, str]:
    if name == "libx265":
        return {"crf": str(tc.crf), "preset": tc.preset, "x265-params": "log-level=error"}
    if name == "libx264":
        return {"crf": str(tc.crf), "preset": tc.preset}
    if name.endswith("_nvenc"):
        # Constant quality in NVENC's VBR mode; p4 is its balanced preset.
        return {"rc": "vbr", "cq": str(tc.crf), "preset": "p4"}
    return {}


# --------------------------------------------------------------------------------------------
# Frames of a clip on the constant frame grid
# --------------------------------------------------------------------------------------------


def _rotation_filters(rotation: int) -> list[tuple[str, str]]:
    """FFmpeg filters that turn a frame with this display rotation upright (as autorotate)."""
    r = rotation % 360
    if r == 90:
        return [("transpose", "clock")]
    if r == 180:
        return [("hflip", ""), ("vflip", "")]
    if r == 270:
        return [("transpose", "cclock")]
    return []


def _fit_filters(tc: TranscodeConfig) -> list[tuple[str, str]]:
    w, h = tc.width, tc.height
    if tc.fit == "crop":
        return [("scale", f"{w}:{h}:force_original_aspect_ratio=increase:flags=area"), ("crop", f"{w}:{h}")]
    if tc.fit == "pad":
        return [("scale", f"{w}:{h}:force_original_aspect_ratio=decrease:flags=area"),
                ("pad", f"{w}:{h}:(ow-iw)/2:(oh-ih)/2")]
    if tc.fit == "stretch":
        return [("scale", f"{w}:{h}:flags=area")]
    raise TranscodeError(f"transcode.fit {tc.fit!r} is not one of crop, pad, stretch")


def clip_frames(src: str | os.PathLike[str], frame_start: int, frame_end: int) -> Iterator[av.VideoFrame]:
    """Decoded frames ``frame_start <= i < frame_end`` of ``src`` on the constant frame grid
    of its average rate: exactly ``frame_end - frame_start`` frames, in order.

    Raises:
        UnreadableVideo: the source cannot be opened or has no video stream.
        TruncatedSource: the source ends more than :data:`END_SLACK` frames before the end.
    """
    if frame_end <= frame_start or frame_start < 0:
        raise TranscodeError(f"empty or negative frame range [{frame_start}, {frame_end})")
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableVideo(f"cannot open {Path(src).name}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise UnreadableVideo(f"{Path(src).name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise UnreadableVideo(f"{Path(src).name}: unknown frame rate")
        fps = float(rate)
        tb = float(stream.time_base or Fraction(1, 1))
        t0 = stream.start_time or 0
        if frame_start > 0:
            # Seek a little before the start: a keyframe at or before it, never after.
            target = t0 + int(max(0.0, frame_start / fps - 0.5) / tb)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        nxt = frame_start  # next slot of the grid to fill
        held: av.VideoFrame | None = None  # latest frame at or before slot `nxt`
        last_idx = -1
        try:
            for frame in container.decode(stream):
                idx = last_idx + 1 if frame.pts is None else int(round((frame.pts - t0) * tb * fps))
                if idx <= last_idx:
                    continue  # duplicate timestamp (VFR above the nominal rate)
                last_idx = idx
                if idx <= nxt:
                    held = frame
                    if idx < nxt:
                        continue
                # Slots before this frame's time show the frame held until now.
                while nxt < min(idx, frame_end):
                    if held is None:  # the seek landed after the start (broken index)
                        raise TruncatedSource(f"{Path(src).name}: frame {nxt} cannot be decoded (first "
                                              f"frame after seeking is {idx}); remux the file")
                    yield held
                    nxt += 1
                held = frame
                if nxt >= frame_end:
                    return
        except av.error.FFmpegError as exc:
            raise TruncatedSource(f"{Path(src).name}: decoding failed at frame {nxt} of "
                                  f"[{frame_start}, {frame_end}): {exc}") from exc
        if held is None or frame_end - nxt > END_SLACK + (1 if last_idx >= nxt else 0):
            raise TruncatedSource(f"{Path(src).name}: the video ends at frame {max(last_idx, nxt - 1)}, "
                                  f"the clip needs frames up to {frame_end - 1}; the file is truncated")
        while nxt < frame_end:
            yield held
            nxt += 1


# --------------------------------------------------------------------------------------------
# Cut + encode
# --------------------------------------------------------------------------------------------


def safe_clip_path(store: str | os.PathLike[str], video_id: str, clip_id: str) -> Path:
    """``<store>/clips/<video_id>/<clip_id>.mp4``, refusing anything that would leave the store."""
    root = Path(store).resolve()
    for part in (video_id, clip_id):
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise OutsideStore(f"unsafe id {part!r} for a clip path")
    path = (root / "clips" / video_id / f"{clip_id}.mp4").resolve()
    if root not in path.parents:
        raise OutsideStore(f"clip path {path} is outside the artifact store {root}")
    return path


def count_frames(path: str | os.PathLike[str]) -> tuple[str, int, int, int]:
    """(codec, width, height, decoded frame count) of a clip file."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = sum(1 for _ in c.decode(s))
        return s.codec_context.name, s.codec_context.width, s.codec_context.height, n


def _existing(dest: Path, n: int, tc: TranscodeConfig) -> bool:
    """A complete clip from an earlier attempt: right codec, size and frame count (header)."""
    try:
        with av.open(str(dest)) as c:
            s = c.streams.video[0]
            return (s.codec_context.name == CODEC_NAMES.get(tc.codec) and s.codec_context.width == tc.width
                    and s.codec_context.height == tc.height and int(s.frames) == n)
    except (av.error.FFmpegError, OSError, IndexError):
        return False


def transcode_clip(
    src: str | os.PathLike[str],
    frame_start: int,
    frame_end: int,
    dest: str | os.PathLike[str],
    tc: TranscodeConfig = TranscodeConfig(),
) -> ClipFile:
    """Cut frames ``[frame_start, frame_end)`` of ``src`` and encode them to ``dest`` in the
    uniform format of ``tc``, atomically. Returns what was written.

    Raises:
        TranscodeError (and subclasses), UnreadableVideo: with a message naming the file.
    """
    dest = Path(dest)
    n = frame_end - frame_start
    encoder = pick_encoder(tc.codec, tc.encoder)
    if dest.exists() and _existing(dest, n, tc):
        with av.open(str(src)) as c:
            rate = c.streams.video[0].average_rate
        return ClipFile(dest, CODEC_NAMES[tc.codec], encoder, tc.width, tc.height, float(rate or 0), n, reused=True)
    if tc.width % 2 or tc.height % 2 or tc.width <= 0 or tc.height <= 0:
        raise TranscodeError(f"transcode size {tc.width}x{tc.height} must be positive and even (4:2:0)")

    with av.open(str(src)) as probe:
        if not probe.streams.video:
            raise UnreadableVideo(f"{Path(src).name} has no video stream")
        s = probe.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate:
            raise UnreadableVideo(f"{Path(src).name}: unknown frame rate")
        # A rational rate (30000/1001 stays exact); absurd denominators are limited.
        rate = Fraction(rate).limit_denominator(1001)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    written = 0
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            ostream = out.add_stream(encoder, rate=rate, options=_encoder_options(encoder, tc))
            ostream.width, ostream.height, ostream.pix_fmt = tc.width, tc.height, "yuv420p"
            ostream.codec_context.time_base = 1 / rate
            if tc.codec == "hevc":
                ostream.codec_tag = "hvc1"  # plays in Apple players too
            graph: av.filter.Graph | None = None
            for frame in clip_frames(src, frame_start, frame_end):
                if graph is None:
                    graph = _graph(frame, tc)
                graph.push(frame)
                scaled = graph.pull()
                scaled.pts = written
                scaled.time_base = ostream.codec_context.time_base
                scaled.pict_type = av.video.frame.PictureType.NONE
                for packet in ostream.encode(scaled):
                    out.mux(packet)
                written += 1
            for packet in ostream.encode(None):
                out.mux(packet)
        if written != n:
            raise TranscodeError(f"wrote {written} frames, expected {n}")
        os.replace(tmp, dest)  # complete: now it may look like a clip
    except av.error.FFmpegError as exc:
        raise TranscodeError(f"{Path(src).name} [{frame_start}, {frame_end}): encoding with {encoder} "
                             f"failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return ClipFile(dest, CODEC_NAMES[tc.codec], encoder, tc.width, tc.height, float(rate), n)


def _graph(first: av.VideoFrame, tc: TranscodeConfig) -> av.filter.Graph:
    """rotate upright -> fit to the target size -> yuv420p, built for the first frame's format."""
    g = av.filter.Graph()
    nodes = [g.add_buffer(width=first.width, height=first.height, format=first.format.name,
                          time_base=first.time_base or Fraction(1, 1000))]
    for name, args in _rotation_filters(int(getattr(first, "rotation", 0) or 0)) + _fit_filters(tc) + [
        ("setsar", "1"), ("format", "yuv420p")
    ]:
        nodes.append(g.add(name, args) if args else g.add(name))
    nodes.append(g.add("buffersink"))
    g.link_nodes(*nodes).configure()
    return g
