"""MegaSaM, the paper's geometry backend, as an external step (a user's own installation).

MegaSaM (github.com/mega-sam/mega-sam) needs its own conda environment, compiled
DROID-SLAM extensions and four checkpoints, so it is not imported: the backend writes
the sampled frames as ``{frames}/00000.png ...``, runs the user's command, and reads the
reconstruction MegaSaM writes back: ``{out}/*_sgd_cvd_hr.npz`` (consistent-video-depth
output) with ``cam_c2w (N, 4, 4)`` camera-to-world, ``intrinsic (3, 3)`` at MegaSaM's
working resolution, ``depths (N, h, w)``; and, when present, ``{out}/motion_prob.npy``
``(N, h', w')`` (MegaSaM's motion probability), used for the dynamic masks.

``annotate.megasam_command`` is a shell command template with ``{frames}`` and
``{out}``, e.g. ``cd /opt/mega-sam && bash run_spatialvid.sh {frames} {out}`` (the
user's wrapper around MegaSaM's depth, tracking and CVD scripts).

Scale convention: MegaSaM's, as the reference: depth aligned to UniDepth's metric
depth, so translations are roughly metres. World = first annotated camera.
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..poses import c2w_to_poses7
from .base import GeometryBackend, GeometryError, GeometryResult, rebase_to_first, register_backend


def read_megasam_output(out_dir: str | os.PathLike[str], width: int, height: int) -> dict[str, Any]:
    """Poses, intrinsics (pixels at ``width x height``), depth and motion probability from a
    MegaSaM output folder. Raises FileNotFoundError / KeyError with what is missing."""
    found = sorted(glob.glob(os.path.join(os.fspath(out_dir), "*_sgd_cvd_hr.npz")))
    if not found:
        raise FileNotFoundError(f"no *_sgd_cvd_hr.npz in {out_dir}: did MegaSaM's CVD step run?")
    with np.load(found[0], allow_pickle=False) as z:
        missing = [k for k in ("cam_c2w", "intrinsic", "depths") if k not in z.files]
        if missing:
            raise KeyError(f"{found[0]} lacks {', '.join(missing)} (keys: {', '.join(z.files)})")
        c2w = np.asarray(z["cam_c2w"], dtype=np.float64)
        K = np.asarray(z["intrinsic"], dtype=np.float64)
        depths = np.asarray(z["depths"], dtype=np.float32)
    n, h, w = depths.shape
    sx, sy = width / w, height / h  # MegaSaM works at its own resolution
    k = np.array([K[0, 0] * sx, K[1, 1] * sy, K[0, 2] * sx, K[1, 2] * sy])
    motion = None
    mp = os.path.join(os.fspath(out_dir), "motion_prob.npy")
    if os.path.exists(mp):
        m = np.asarray(np.load(mp), dtype=np.float32)
        motion = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in m])
    return {"c2w": c2w[:, :3, :4], "intrinsics": np.tile(k, (n, 1)), "depth": depths, "motion_prob": motion,
            "file": found[0]}


@register_backend
class MegaSamBackend(GeometryBackend):
    """The paper's backend, run as an external command; outputs read back."""

    name = "megasam"
    scale_convention = "MegaSaM: depth aligned to UniDepth metric depth (about metres); world = first annotated camera"

    def __init__(self, options: Any = None, command: str = "", timeout_s: float = 3600.0) -> None:
        self.command = command
        self.timeout_s = timeout_s

    def setup(self) -> None:
        if not self.command or "{frames}" not in self.command or "{out}" not in self.command:
            raise GeometryError("the megasam backend runs your MegaSaM installation: set annotate.megasam_command "
                                "to a command with {frames} and {out}, e.g. "
                                "'cd /opt/mega-sam && bash run_spatialvid.sh {frames} {out}'")

    def version(self) -> str:
        return "megasam-external/" + (self.command.split()[0] if self.command else "unset")

    def estimate(self, frames: NDArray[np.uint8], frame_indexes: NDArray[np.int64]) -> GeometryResult:
        n, h, w = frames.shape[:3]
        fail = lambda reason: GeometryResult.failure(self.name, self.version(), reason,  # noqa: E731
                                                     self.scale_convention, n, w, h)
        with tempfile.TemporaryDirectory(prefix="megasam-") as tmp:
            fdir, odir = Path(tmp) / "frames", Path(tmp) / "out"
            fdir.mkdir()
            odir.mkdir()
            for i, img in enumerate(frames):
                cv2.imwrite(str(fdir / f"{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cmd = self.command.format(frames=shlex.quote(str(fdir)), out=shlex.quote(str(odir)))
            proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=self.timeout_s)
            if proc.returncode != 0:
                return fail(f"megasam exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}")
            try:
                out = read_megasam_output(odir, w, h)
            except (FileNotFoundError, KeyError, ValueError) as exc:
                return fail(f"megasam output unreadable: {exc}")
        if len(out["c2w"]) != n:
            return fail(f"megasam returned {len(out['c2w'])} cameras for {n} frames")
        poses = rebase_to_first(c2w_to_poses7(out["c2w"]))
        return GeometryResult(backend=self.name, version=self.version(), success=True, reason="",
                              scale_convention=self.scale_convention, frame_indexes=np.asarray(frame_indexes),
                              poses=poses, intrinsics=out["intrinsics"], registered=np.ones(n, bool), num_sampled=n,
                              width=w, height=h, depth=out["depth"], motion_prob=out["motion_prob"],
                              extras={"file": out["file"]})


def build(files: dict[str, Any], **options: Any) -> MegaSamBackend:
    """Model-registry builder (``spatialvid.models``): ``get_model("megasam", command=...)``."""
    backend = MegaSamBackend(command=options.get("command", ""))
    backend.setup()
    return backend
