"""Sample videos made on the spot, so the demo and tests need no download.

Four samples are a camera panning over a flat procedural texture (smooth multi-scale
texture, so the codec keeps it), with a known character: a well-lit walk (passes the
filters), a night street (too dark), a locked-off tripod shot (too little motion) and
a whip-pan (too much motion). Being flat, they have no parallax, so the geometry stage
refuses them with that reason. The fifth is a handheld walk through a rendered 3-D room
(``producers/rendered.py``): it passes the filters and gets camera poses and captions.
Encoded with libx264 through PyAV.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class SampleSpec:
    name: str
    seconds: float
    speed_px: float  # camera speed over the texture, pixels per frame at 1280x720
    brightness: float  # multiplies the texture (1.0: mean luminance about 130)
    expect: str  # what the filters should say, for people reading the demo
    rendered: str = ""  # a camera path of producers/rendered.py: render the 3-D room instead


SAMPLES: tuple[SampleSpec, ...] = (
    SampleSpec("city_walk", 24.0, 3.0, 0.8, "passes luminance and motion"),
    SampleSpec("night_street", 12.0, 3.0, 0.1, "too dark: fails luminance (< 20)"),
    SampleSpec("tripod_static", 12.0, 0.0, 0.8, "static camera: fails motion (< 2)"),
    SampleSpec("whip_pan", 12.0, 40.0, 0.8, "very fast pan: fails motion (> 14)"),
    SampleSpec("room_walk", 5.0, 0.0, 1.0, "handheld walk through a rendered 3-D room: passes, gets camera poses",
               rendered="handheld"),
)


def texture(height: int, width: int, seed: int, zoom: float = 1.0) -> np.ndarray:
    """A smooth colour texture with detail at several scales (uint8, HxWx3).

    ``zoom`` scales the detail with the frame, so a small sample looks like a large one
    downscaled (fine detail at a small size would otherwise read as text to OCR).
    """
    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for scale, weight in ((64, 1.0), (16, 0.6), (4, 0.35)):
        scale = max(1, round(scale * zoom))
        small = rng.random((height // scale + 2, width // scale + 2, 3), dtype=np.float32)
        acc += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    acc -= acc.min()
    acc *= 255.0 / acc.max()
    return acc.astype(np.uint8)


def write_sample(path: Path, spec: SampleSpec, width: int = 1280, height: int = 720, fps: int = 24, seed: int = 0) -> Path:
    """Render one sample video to ``path`` (atomically)."""
    from .rendered import render_sequence, write_video

    if spec.rendered:
        clip = render_sequence(spec.rendered, width=width, height=height, fps=fps, duration_s=spec.seconds, seed=seed)
        return write_video(clip.frames, path, fps=fps)
    zoom = width / 1280  # detail and speed are defined at 1280x720
    # Pans wrap around a texture twice the frame width, so any length fits in memory.
    world = texture(height, 2 * width, seed, zoom)
    world = np.concatenate([world, world[:, :width]], axis=1)

    def frames() -> Iterator[np.ndarray]:
        for i in range(int(round(spec.seconds * fps))):
            x = (spec.speed_px * zoom * i) % (2 * width)
            m = np.float32([[1, 0, -x], [0, 1, 0]])
            frame = cv2.warpAffine(world, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            yield cv2.convertScaleAbs(frame, alpha=spec.brightness) if spec.brightness != 1.0 else frame

    return write_video(frames(), path, fps=fps, crf=20)


def write_samples(folder: str | os.PathLike[str], specs: tuple[SampleSpec, ...] = SAMPLES, **kw: int) -> list[Path]:
    """Write every sample into ``folder`` (skipping ones already there)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(specs):
        p = out / f"{spec.name}.mp4"
        if not p.exists():
            write_sample(p, spec, seed=i, **kw)
        paths.append(p)
    return paths
