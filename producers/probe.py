"""Probe a video file with PyAV: duration, fps, size, codec, rotation; refuse bad input.

Every refusal is a :class:`VideoError` whose class name and message say what is wrong
and what to do, so the producer can turn it into a readable dead letter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av

# Beyond these a file is absurd for this dataset (and a decoding hazard).
MAX_PIXELS = 8192 * 8192
MAX_DURATION_S = 24 * 3600.0


class VideoError(Exception):
    """A video that cannot enter the pipeline; the message says why."""


class EmptyFile(VideoError):
    """The file has zero bytes."""


class UnreadableVideo(VideoError):
    """The container cannot be opened or no frame decodes (corrupt or truncated)."""


class NoVideoStream(VideoError):
    """The file holds no video stream (audio only, subtitles, ...)."""


class AbsurdVideo(VideoError):
    """Size, duration or frame rate outside anything this dataset can use."""


@dataclass(frozen=True)
class Probe:
    """What the producer learns about a video before emitting its record."""

    duration_s: float
    fps: float
    width: int
    height: int
    num_frames: int
    codec: str
    rotation: int
    size_bytes: int


def probe_video(path: str | os.PathLike[str]) -> Probe:
    """Open ``path``, read its stream facts and decode its first frame (so a corrupt
    file is caught here, not deep in a later stage)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise UnreadableVideo(f"cannot read {p}: {exc.strerror}") from exc
    if size == 0:
        raise EmptyFile(f"{p.name} is empty (0 bytes)")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableVideo(f"{p.name} is not a readable video container ({exc}); the file may be corrupt or truncated") from exc
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStream(f"{p.name} has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
            raise AbsurdVideo(f"{p.name}: frame size {width}x{height} is outside 1..{MAX_PIXELS} pixels")
        if not (1.0 <= fps <= 240.0):
            raise AbsurdVideo(f"{p.name}: frame rate {fps:.3f} is outside 1..240 fps")
        if duration > MAX_DURATION_S:
            raise AbsurdVideo(f"{p.name}: duration {duration:.0f}s exceeds {MAX_DURATION_S:.0f}s")
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError) as exc:
            raise UnreadableVideo(f"{p.name}: no frame decodes ({exc or 'no frames'}); the file may be corrupt or truncated") from exc
        rotation = int(getattr(first, "rotation", 0) or 0)
        num_frames = int(stream.frames) or int(round(duration * fps))
        if num_frames <= 0 or duration <= 0:
            raise UnreadableVideo(f"{p.name}: duration unknown (no frame count, no duration); remux it with ffmpeg -c copy")
    return Probe(
        duration_s=duration,
        fps=fps,
        width=width,
        height=height,
        num_frames=num_frames,
        codec=stream.codec_context.name,
        rotation=rotation,
        size_bytes=size,
    )

