"""A picture of one clip's camera trajectory for a person (``spatialvid show``, the dashboard).

Top view (world x right, z forward: looking down, "up" being -y as with OpenCV axes
and a world frame at the first camera) and side view (z forward, -y up), camera
centres coloured by time with the viewing direction drawn every few frames, and the
motion instruction ranges on a timeline below with the same time colours.

matplotlib is imported lazily, with the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .instructions import COMMANDS
from .poses import camera_centers, camera_forward

__all__ = ["render_trajectory"]

# Timeline rows: one per axis (the two commands of an axis share a row) and Stay.
_ROWS = [("Dolly", "Dolly In", "Dolly Out"), ("Truck", "Truck Right", "Truck Left"),
         ("Pedestal", "Pedestal Up", "Pedestal Down"), ("Pan", "Pan Left", "Pan Right"),
         ("Tilt", "Tilt Up", "Tilt Down"), ("Roll", "Roll CW", "Roll CCW"), ("Stay", "Stay", "Stay")]
_ROW_OF = {cmd: i for i, (_, a, b) in enumerate(_ROWS) for cmd in (a, b)}
_SHORT = {"Dolly In": "In", "Dolly Out": "Out", "Truck Right": "Right", "Truck Left": "Left",
          "Pedestal Up": "Up", "Pedestal Down": "Down", "Pan Left": "Left", "Pan Right": "Right",
          "Tilt Up": "Up", "Tilt Down": "Down", "Roll CW": "CW", "Roll CCW": "CCW", "Stay": "Stay"}
assert set(_ROW_OF) == set(COMMANDS)


def _parse_ranges(instructions: dict[str, list[str]] | None) -> list[tuple[int, int, list[str]]]:
    out = []
    for key, cmds in (instructions or {}).items():
        a, b = (int(v) for v in key.split("->"))
        out.append((a, b, list(cmds)))
    return sorted(out)


def _spatial(ax: Any, h: np.ndarray, v: np.ndarray, dh: np.ndarray, dv: np.ndarray, cmap: Any, norm: Any,
             xlabel: str, ylabel: str, title: str) -> Any:
    n = h.shape[0]
    t = np.arange(n)
    ax.plot(h, v, color="0.75", lw=1.0, zorder=1)
    sc = ax.scatter(h, v, c=t, cmap=cmap, norm=norm, s=14, zorder=2)
    # Arrow length: a tenth of the path's extent, at least 0.02 (a camera turning in place).
    span = max(float(np.ptp(h)) if n else 0.0, float(np.ptp(v)) if n else 0.0, 0.2)
    step = max(1, n // 12)
    sel = np.arange(0, n, step)
    length = np.hypot(dh[sel], dv[sel])
    scale = np.where(length > 1e-9, 0.1 * span / np.maximum(length, 1e-9), 0.0)
    u, w = dh[sel] * scale, dv[sel] * scale
    ax.quiver(h[sel], v[sel], u, w, t[sel], cmap=cmap, norm=norm, edgecolor="black", linewidth=0.5,
              angles="xy", scale_units="xy", scale=1, width=0.006, headwidth=4, zorder=3,
              label="view direction")
    if n:
        ax.update_datalim(np.column_stack([h[sel] + u, v[sel] + w]))
    if n:
        ax.plot(h[0], v[0], ls="none", marker="^", ms=9, mfc="white", mec="black", zorder=4, label="start")
        ax.plot(h[-1], v[-1], ls="none", marker="s", ms=8, mfc="white", mec="black", zorder=4, label="end")
    ax.margins(0.12)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return sc


def render_trajectory(
    poses_w2c: ArrayLike,
    instructions: dict[str, list[str]] | None,
    out_png: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Render a trajectory to a PNG and return its path.

    ``poses_w2c``: ``(N, 7)`` w2c rows ``[tx, ty, tz, qx, qy, qz, qw]`` (``poses.npy``).
    ``instructions``: ``{"start->end": [commands]}`` with pose indices (``instructions.json``),
    or None. ``title``: e.g. the clip id and its metrics.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    poses = np.asarray(poses_w2c, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 7:
        raise ValueError(f"expected w2c poses of shape (N, 7), got {poses.shape}")
    n = poses.shape[0]
    c = camera_centers(poses)
    f = camera_forward(poses)
    cmap = plt.get_cmap("viridis")
    norm = Normalize(vmin=0, vmax=max(n - 1, 1))

    fig = plt.figure(figsize=(12, 8.5), dpi=dpi)
    grid = fig.add_gridspec(2, 2, height_ratios=[5, 2.6], hspace=0.3, wspace=0.25)
    ax_top = fig.add_subplot(grid[0, 0])
    ax_side = fig.add_subplot(grid[0, 1])
    ax_ins = fig.add_subplot(grid[1, :])

    sc = _spatial(ax_top, c[:, 0], c[:, 2], f[:, 0], f[:, 2], cmap, norm,
                  "x (right)", "z (forward)", "top view")
    _spatial(ax_side, c[:, 2], -c[:, 1], f[:, 2], -f[:, 1], cmap, norm,
             "z (forward)", "height (-y, up)", "side view")
    cb = fig.colorbar(sc, ax=[ax_top, ax_side], fraction=0.025, pad=0.02)
    cb.set_label("pose index (time)")

    # Top row of the timeline: the time colours of the spatial views.
    ax_ins.imshow(np.arange(max(n, 1))[None, :], aspect="auto", cmap=cmap, norm=norm,
                  extent=(-0.5, max(n, 1) - 0.5, -0.65, -1.35), zorder=0)
    ax_ins.set_title("motion instructions (pose index ranges; blue / orange: the two directions)", fontsize=10)

    ranges = _parse_ranges(instructions)
    for a, b, cmds in ranges:
        for cmd in cmds:
            row = _ROW_OF.get(cmd)
            if row is None:
                continue
            first = cmd == _ROWS[row][1]
            color = "0.8" if cmd == "Stay" else ("tab:blue" if first else "tab:orange")
            ax_ins.barh(row, b - a, left=a - 0.5, height=0.7, color=color, edgecolor="white", lw=0.5)
            if b - a >= max(2, n / 40):
                ax_ins.text((a + b - 1) / 2, row, _SHORT[cmd], ha="center", va="center", fontsize=7)
        ax_ins.axvline(a - 0.5, color="0.5", lw=0.4, alpha=0.6)
    ax_ins.set_yticks(range(-1, len(_ROWS)))
    ax_ins.set_yticklabels(["time"] + [r[0] for r in _ROWS])
    ax_ins.set_ylim(len(_ROWS) - 0.5, -1.5)
    ax_ins.set_xlim(-0.5, max(n, 1) - 0.5)
    ax_ins.set_xlabel("pose index")
    ax_ins.grid(axis="x", alpha=0.3)
    if not ranges:
        ax_ins.text(0.5, 0.5, "no instructions", transform=ax_ins.transAxes, ha="center", color="0.4")

    fig.suptitle(title or f"camera trajectory ({n} poses)", fontsize=12)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out
