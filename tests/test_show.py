"""`spatialvid show` renders a clip's trajectory from its release-layout folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spatialvid.cli import main

pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the [plot] extra)")


def test_show_renders_a_png_of_a_forward_walk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spatialvid.processors.geometry.instructions import motion_instructions
    from spatialvid.sinks.release import ClipAnnotations, write_clip_annotations

    n = 60
    poses = np.zeros((n, 7))
    poses[:, 2] = -0.05 * np.arange(n)  # w2c t = -c: the camera walks along +z (forward)
    poses[:, 6] = 1.0
    intr = np.tile([0.6, 1.0, 0.5, 0.5], (n, 1))
    instructions = motion_instructions(poses)
    folder = tmp_path / "annotations" / "group_0001" / "walk_0"
    write_clip_annotations(folder, ClipAnnotations(poses=poses, intrinsics=intr, frame_indexes=np.arange(n) * 5,
                                                   instructions=instructions))
    out = tmp_path / "walk.png"
    assert main(["show", str(folder), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert str(out) in capsys.readouterr().out
    assert any("Dolly In" in cmds for cmds in instructions.values()), instructions
