"""Release layout writer/reader (sinks/release.py): every file loads with a plain reader
(NumPy, zipfile + OpenEXR, SciPy CSR as the reference's expand()) and matches what was
written; writes are atomic; local folders and fsspec URLs both work."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation

from spatialvid.processors.geometry.poses import poses7_from_c2w, poses7_to_c2w
from spatialvid.sinks import release
from spatialvid.sinks.release import (
    ClipAnnotations,
    depth_from_disparity,
    read_clip_annotations,
    release_paths,
    write_clip_annotations,
)

N, H, W = 12, 18, 32


@pytest.fixture
def ann() -> ClipAnnotations:
    rng = np.random.default_rng(3)
    poses = poses7_from_c2w(Rotation.random(N, random_state=4).as_matrix(), rng.normal(size=(N, 3)))
    masks = rng.random((N, H, W)) < 0.15
    masks[3] = False  # an empty frame
    return ClipAnnotations(
        poses=poses,
        intrinsics=np.tile([0.52, 0.93, 0.5, 0.5], (N, 1)),
        frame_indexes=np.arange(N) * 6 + 2,
        dyn_masks=masks,
        disparity=rng.uniform(0.02, 4.0, (N, H, W)),
        instructions={"0->4": ["Stay"], "4->11": ["Dolly In", "Pan Left"]},
    )


def expand_like_reference(npz) -> np.ndarray:
    """The reference's expand(): (len(files) - 1) // 3 frames of CSR + 'shape'."""
    frames = (len(npz.files) - 1) // 3
    shape = tuple(npz["shape"])
    return np.stack(
        [csr_matrix((npz[f"f_{i}_data"], npz[f"f_{i}_indices"], npz[f"f_{i}_indptr"]), shape=shape).toarray()
         for i in range(frames)]
    )


def test_release_paths_layout(tmp_path):
    p = release_paths(tmp_path, "vidA_3", 7)
    assert p.annotation_dir == os.path.join(tmp_path, "annotations", "group_0007", "vidA_3")
    assert p.depth_zip == os.path.join(tmp_path, "depths", "group_0007", "vidA_3.zip")
    assert p.video == os.path.join(tmp_path, "videos", "group_0007", "vidA_3.mp4")
    url = release_paths("s3://bucket/spatialvid", "x_0", 12)
    assert url.annotation_dir == "s3://bucket/spatialvid/annotations/group_0012/x_0"


def test_files_load_with_plain_readers(tmp_path, ann):
    paths = release_paths(tmp_path, "clip_0", 1)
    written = write_clip_annotations(paths.annotation_dir, ann, depth_zip=paths.depth_zip)
    d = paths.annotation_dir
    assert sorted(os.listdir(d)) == sorted(
        ["poses.npy", "extrinsics.npy", "intrinsics.npy", "indexes.txt", "dyn_masks.npz", "instructions.json"]
    ), f"unexpected files: {os.listdir(d)}"
    assert list(written)[-1] == "poses.npy", f"poses.npy must be written last (completion marker): {list(written)}"

    poses = np.load(os.path.join(d, "poses.npy"))
    assert poses.shape == (N, 7) and poses.dtype == np.float32, f"poses.npy: {poses.shape} {poses.dtype}"
    assert np.allclose(poses, ann.poses, atol=1e-6), "poses.npy differs from what was written"
    extr = np.load(os.path.join(d, "extrinsics.npy"))
    assert extr.shape == (N, 3, 4), f"extrinsics.npy shape {extr.shape}"
    assert np.allclose(extr, poses7_to_c2w(ann.poses), atol=1e-5), "extrinsics.npy must be c2w of poses"
    # c2w: the camera centre is its last column, and it maps the camera origin there
    assert np.allclose(extr[:, :, 3], -np.einsum("nji,nj->ni", poses7_to_c2w(ann.poses)[:, :, :3].transpose(0, 2, 1),
                                                 ann.poses[:, :3]), atol=1e-5)
    intr = np.load(os.path.join(d, "intrinsics.npy"))
    assert intr.shape == (N, 4) and np.allclose(intr, ann.intrinsics), "intrinsics.npy differs"

    lines = open(os.path.join(d, "indexes.txt")).read().splitlines()
    frames = [int(parts[1]) for parts in (line.split() for line in lines) if len(parts) == 2]
    assert frames == ann.frame_indexes.tolist(), f"indexes.txt frames {frames}"
    assert lines[1] == "1 8", f"indexes.txt line format 'i frame', got {lines[1]!r}"

    masks = expand_like_reference(np.load(os.path.join(d, "dyn_masks.npz")))
    assert masks.shape == (N, H, W) and (masks.astype(bool) == ann.dyn_masks).all(), "dyn_masks.npz differs"

    with open(os.path.join(d, "instructions.json"), encoding="utf-8") as fh:
        assert json.load(fh) == ann.instructions


def test_depth_zip_reads_with_openexr_like_the_reference(tmp_path, ann):
    OpenEXR = pytest.importorskip("OpenEXR")
    paths = release_paths(tmp_path, "clip_0", 1)
    write_clip_annotations(paths.annotation_dir, ann, depth_zip=paths.depth_zip)
    frames = []
    with zipfile.ZipFile(paths.depth_zip) as z:
        names = sorted(z.namelist())
        assert len(names) == N and all(n.endswith(".exr") for n in names), f"zip entries: {names}"
        for name in names:  # the reference's read_depth.py, line for line in spirit
            with z.open(name) as f:
                exr = OpenEXR.InputFile(f)
                dw = exr.header()["dataWindow"]
                w, h = dw.max.x - dw.min.x + 1, dw.max.y - dw.min.y + 1
                z_bytes = exr.channels(["Z"])[0]
                frames.append(np.frombuffer(z_bytes, dtype=np.float16).reshape(h, w).astype(np.float32))
            with z.open(name) as f:
                part = OpenEXR.File(io.BytesIO(f.read()))
                assert part.channels()["Z"].pixels.dtype == np.float16, "depth must be half-float"
    disparity = np.stack(frames)
    assert disparity.shape == (N, H, W)
    assert np.allclose(disparity, ann.disparity, rtol=1e-3), "EXR holds the disparity (float16 precision)"
    depth = 1.0 / disparity
    assert np.allclose(depth, depth_from_disparity(ann.disparity), rtol=2e-3), "depth = 1 / disparity"


def test_reader_round_trips_everything(tmp_path, ann):
    pytest.importorskip("OpenEXR")
    paths = release_paths(tmp_path, "clip_0", 1)
    write_clip_annotations(paths.annotation_dir, ann, depth_zip=paths.depth_zip)
    back = read_clip_annotations(paths.annotation_dir, depth_zip=paths.depth_zip)
    assert np.allclose(back.poses, ann.poses, atol=1e-6)
    assert np.allclose(back.extrinsics, poses7_to_c2w(ann.poses), atol=1e-5)
    assert np.allclose(back.intrinsics, ann.intrinsics)
    assert back.frame_indexes.tolist() == ann.frame_indexes.tolist()
    assert (back.dyn_masks == ann.dyn_masks).all()
    assert np.allclose(back.disparity, ann.disparity.astype(np.float16).astype(np.float32))
    assert back.instructions == ann.instructions
    assert np.allclose(back.depth, depth_from_disparity(back.disparity))


def test_depth_clip_range():
    d = depth_from_disparity(np.array([0.0, 1e-5, 0.5, 1e4]))
    assert np.allclose(d, [1e2, 1e2, 2.0, 1e-3]), f"depth = clip(1/disparity, 1e-3, 1e2), got {d}"


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path, ann, monkeypatch):
    d = tmp_path / "annotations" / "group_0000" / "c"
    ann.disparity = None
    write_clip_annotations(d, ann)
    before = (d / "poses.npy").read_bytes()
    changed = ClipAnnotations(poses=ann.poses[::-1].copy(), intrinsics=ann.intrinsics,
                              frame_indexes=ann.frame_indexes)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(release.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_clip_annotations(d, changed)
    monkeypatch.undo()
    assert (d / "poses.npy").read_bytes() == before, "a failed write must leave the old poses.npy intact"
    assert not [p for p in os.listdir(d) if p.endswith(".tmp")], f"temp files left: {os.listdir(d)}"
    write_clip_annotations(d, changed)  # overwriting works
    assert np.allclose(np.load(d / "poses.npy"), changed.poses, atol=1e-6)


def test_shape_mismatch_is_refused(tmp_path, ann):
    bad = ClipAnnotations(poses=ann.poses, intrinsics=ann.intrinsics[:-1], frame_indexes=ann.frame_indexes)
    with pytest.raises(ValueError, match="intrinsics"):
        write_clip_annotations(tmp_path / "x", bad)
    with pytest.raises(ValueError, match="depth_zip"):
        write_clip_annotations(tmp_path / "y", ann)  # disparity without a place to put it


def test_fsspec_memory_url_round_trip(ann):
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("OpenEXR")
    paths = release_paths("memory://release-test", "clip_9", 2)
    written = write_clip_annotations(paths.annotation_dir, ann, depth_zip=paths.depth_zip)
    assert all(uri.startswith("memory://") for uri in written.values()), written
    fs = fsspec.filesystem("memory")
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/release-test/annotations/group_0002/clip_9", detail=False))
    assert listed == sorted(["poses.npy", "extrinsics.npy", "intrinsics.npy", "indexes.txt", "dyn_masks.npz",
                             "instructions.json"]), f"memory fs holds {listed}"
    with fs.open("/release-test/annotations/group_0002/clip_9/poses.npy", "rb") as fh:
        assert np.allclose(np.load(fh), ann.poses, atol=1e-6)
    back = read_clip_annotations(paths.annotation_dir, depth_zip=paths.depth_zip)
    assert (back.dyn_masks == ann.dyn_masks).all() and back.instructions == ann.instructions
    assert np.allclose(back.disparity, ann.disparity, rtol=1e-3)
    fs.rm("/release-test", recursive=True)
