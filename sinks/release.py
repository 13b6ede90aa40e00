"""Writer and reader of one clip's annotation artifacts in the released SpatialVID layout
(SPEC.md §3, §7).

Release layout::

    annotations/group_XXXX/{clip_id}/poses.npy          N x 7  w2c [tx, ty, tz, qx, qy, qz, qw]
                                     extrinsics.npy     N x 3 x 4  c2w [R.T | c] (ours; not in
                                                        the original release, users asked)
                                     intrinsics.npy     N x 4  [fx/(2cx), fy/(2cy), 0.5, 0.5]
                                     indexes.txt        "i frame" per line: annotated frame i
                                                        is video frame `frame`
                                     dyn_masks.npz      per-frame boolean masks, CSR: keys
                                                        f_{i}_data, f_{i}_indices, f_{i}_indptr,
                                                        shape
                                     instructions.json  {"start->end": [commands]}
                                     caption.json       (written by the caption stage)
    depths/group_XXXX/{clip_id}.zip                     one half-float EXR per annotated frame,
                                                        channel "Z" holding DISPARITY;
                                                        depth = clip(1 / disparity, 1e-3, 1e2)

Pose conventions are those of ``spatialvid.processors.geometry.poses`` (OpenCV camera
axes: x right, y down, z forward).

Every file is written atomically (to a temporary name in the same folder, then renamed),
and ``poses.npy`` is written last, so a folder holding ``poses.npy`` is complete. A
destination is a local path or an fsspec URL (``s3://...``, ``memory://...``); fsspec
is imported only for URLs. On object stores the "rename" is a copy and delete; a
reader never sees a half-written object either way.

EXR needs the ``OpenEXR`` package (PyPI, imported lazily); the files it writes are read
by the reference's ``read_depth.py`` (``OpenEXR.InputFile`` + channel ``Z`` as float16).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "POSES",
    "EXTRINSICS",
    "INTRINSICS",
    "INDEXES",
    "DYN_MASKS",
    "INSTRUCTIONS",
    "CAPTION",
    "write_caption_json",
    "read_caption_json",
    "ClipAnnotations",
    "ReleasePaths",
    "release_paths",
    "write_clip_annotations",
    "read_clip_annotations",
    "encode_dyn_masks",
    "decode_dyn_masks",
    "encode_depth_zip",
    "decode_depth_zip",
    "depth_from_disparity",
    "format_indexes",
    "parse_indexes",
]

POSES = "poses.npy"
EXTRINSICS = "extrinsics.npy"
INTRINSICS = "intrinsics.npy"
INDEXES = "indexes.txt"
DYN_MASKS = "dyn_masks.npz"
INSTRUCTIONS = "instructions.json"
CAPTION = "caption.json"
DEPTH_CHANNEL = "Z"


@dataclass
class ClipAnnotations:
    """One clip's geometric annotations, in memory.

    ``poses``: ``(N, 7)`` w2c rows ``[tx, ty, tz, qx, qy, qz, qw]``.
    ``intrinsics``: ``(N, 4)`` normalised ``[fx/(2cx), fy/(2cy), 0.5, 0.5]``.
    ``frame_indexes``: ``(N,)`` video frame number of each annotated frame.
    ``dyn_masks``: ``(N, H, W)`` bool, or None. ``disparity``: ``(N, H, W)`` float (stored
    as float16), or None. ``instructions``: ``{"start->end": [commands]}``, or None.
    ``extrinsics``: ``(N, 3, 4)`` c2w; derived from ``poses`` when None.
    """

    poses: NDArray[Any]
    intrinsics: NDArray[Any]
    frame_indexes: NDArray[Any]
    dyn_masks: NDArray[Any] | None = None
    disparity: NDArray[Any] | None = None
    instructions: dict[str, list[str]] | None = None
    extrinsics: NDArray[Any] | None = None

    @property
    def num_frames(self) -> int:
        return int(np.asarray(self.poses).shape[0])

    @property
    def depth(self) -> NDArray[np.float32] | None:
        """Depth from the stored disparity: ``clip(1 / disparity, 1e-3, 1e2)``."""
        return None if self.disparity is None else depth_from_disparity(self.disparity)

    def validate(self) -> None:
        """Raise ValueError when shapes disagree with the release layout."""
        n = self.num_frames
        checks = [
            ("poses", np.asarray(self.poses).shape, (n, 7)),
            ("intrinsics", np.asarray(self.intrinsics).shape, (n, 4)),
            ("frame_indexes", np.asarray(self.frame_indexes).shape, (n,)),
        ]
        if self.extrinsics is not None:
            checks.append(("extrinsics", np.asarray(self.extrinsics).shape, (n, 3, 4)))
        for name, got, want in checks:
            if tuple(got) != want:
                raise ValueError(f"{name}: shape {tuple(got)}, expected {want}")
        for name, arr in (("dyn_masks", self.dyn_masks), ("disparity", self.disparity)):
            if arr is not None and (np.ndim(arr) != 3 or np.shape(arr)[0] != n):
                raise ValueError(f"{name}: shape {np.shape(arr)}, expected ({n}, H, W)")


@dataclass(frozen=True)
class ReleasePaths:
    """Where one clip's files go in the release layout under a root folder or URL."""

    annotation_dir: str
    depth_zip: str
    video: str


def release_paths(root: str | os.PathLike[str], clip_id: str, group: int) -> ReleasePaths:
    """Paths of clip ``clip_id`` in group ``group`` (``group_0007``) under ``root``."""
    r = os.fspath(root)
    join = posixpath.join if "://" in r else os.path.join
    g = f"group_{int(group):04d}"
    return ReleasePaths(
        annotation_dir=join(r, "annotations", g, clip_id),
        depth_zip=join(r, "depths", g, f"{clip_id}.zip"),
        video=join(r, "videos", g, f"{clip_id}.mp4"),
    )


# --------------------------------------------------------------------------- storage
def _is_url(target: str) -> bool:
    return "://" in target and not target.startswith("file://")


def _local(target: str) -> str:
    return target[len("file://") :] if target.startswith("file://") else target


def _fs(target: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # optional dependency
        raise ImportError(f"writing to {target!r} needs fsspec (pip install fsspec)") from exc
    return url_to_fs(target)


def _join(base: str, name: str) -> str:
    return posixpath.join(base, name) if _is_url(base) else os.path.join(_local(base), name)


def _write_atomic(target: str, data: bytes) -> str:
    """Write ``data`` to ``target`` via a temporary name in the same folder; return its URI."""
    if _is_url(target):
        fs, path = _fs(target)
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        except BaseException:
            if fs.exists(tmp):
                fs.rm(tmp)
            raise
        return fs.unstrip_protocol(path)
    path = Path(_local(target))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; released files are world-readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path.resolve())


def _read(target: str) -> bytes:
    if _is_url(target):
        fs, path = _fs(target)
        return fs.cat_file(path)
    return Path(_local(target)).read_bytes()


def _exists(target: str) -> bool:
    if _is_url(target):
        fs, path = _fs(target)
        return bool(fs.exists(path))
    return Path(_local(target)).exists()


def _npy_bytes(arr: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_load(data: bytes) -> NDArray[Any]:
    return np.load(io.BytesIO(data), allow_pickle=False)


# --------------------------------------------------------------------------- codecs
def format_indexes(frame_indexes: ArrayLike) -> str:
    """``indexes.txt`` text: one ``"i frame"`` line per annotated frame."""
    idx = np.asarray(frame_indexes).astype(np.int64).reshape(-1)
    return "".join(f"{i} {f}\n" for i, f in enumerate(idx.tolist()))


def parse_indexes(text: str) -> NDArray[np.int64]:
    """Video frame numbers ``(N,)`` from ``indexes.txt`` (the second number of each line)."""
    frames = [int(parts[1]) for parts in (line.split() for line in text.splitlines()) if len(parts) == 2]
    return np.asarray(frames, dtype=np.int64)


def encode_dyn_masks(masks: ArrayLike) -> bytes:
    """``dyn_masks.npz`` bytes: each frame of ``masks (N, H, W)`` as a CSR matrix, the keys
    ``f_{i}_data`` (bool), ``f_{i}_indices``, ``f_{i}_indptr`` (int32) and ``shape`` (H, W),
    compressed; the layout SciPy's ``csr_matrix((data, indices, indptr), shape)`` reads."""
    m = np.asarray(masks).astype(bool, copy=False)
    if m.ndim != 3:
        raise ValueError(f"masks: expected (N, H, W), got {m.shape}")
    n, h, w = m.shape
    frame, row, col = np.nonzero(m)  # C order: sorted by frame, row, column (CSR order)
    per_row = np.count_nonzero(m, axis=2)  # (N, H)
    frame_bounds = np.searchsorted(frame, np.arange(n + 1))
    itype = np.int32 if h * w < 2**31 else np.int64  # SciPy's choice for CSR indices
    arrays: dict[str, NDArray[Any]] = {}
    for i in range(n):  # one entry per frame: the file format is per frame
        lo, hi = frame_bounds[i], frame_bounds[i + 1]
        indptr = np.zeros(h + 1, dtype=itype)
        np.cumsum(per_row[i], out=indptr[1:])
        arrays[f"f_{i}_data"] = np.ones(hi - lo, dtype=bool)
        arrays[f"f_{i}_indices"] = col[lo:hi].astype(itype)
        arrays[f"f_{i}_indptr"] = indptr
    arrays["shape"] = np.asarray([h, w], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_dyn_masks(data: bytes) -> NDArray[np.bool_]:
    """Boolean masks ``(N, H, W)`` from ``dyn_masks.npz`` bytes."""
    npz = np.load(io.BytesIO(data), allow_pickle=False)
    h, w = (int(v) for v in npz["shape"])
    n = (len(npz.files) - 1) // 3  # three arrays per frame, plus "shape"
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        indptr = npz[f"f_{i}_indptr"]
        rows = np.repeat(np.arange(h), np.diff(indptr))
        out[i, rows, npz[f"f_{i}_indices"]] = npz[f"f_{i}_data"].astype(bool)
    return out


def _openexr() -> Any:
    try:
        import OpenEXR
    except ImportError as exc:  # optional dependency
        raise ImportError("depth EXR files need the OpenEXR package (pip install OpenEXR)") from exc
    return OpenEXR


def encode_depth_zip(disparity: ArrayLike) -> bytes:
    """Depth zip bytes: frame ``i`` of ``disparity (N, H, W)`` as ``{i:05d}.exr``, one HALF
    channel ``Z`` (ZIP-compressed EXR; the zip itself stores them uncompressed)."""
    exr = _openexr()
    disp = np.asarray(disparity)
    if disp.ndim != 3:
        raise ValueError(f"disparity: expected (N, H, W), got {disp.shape}")
    half = np.ascontiguousarray(disp.astype(np.float16))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(half.shape[0]):
            header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage}
            frame = io.BytesIO()
            exr.File(header, {DEPTH_CHANNEL: half[i]}).write(frame)
            zf.writestr(f"{i:05d}.exr", frame.getvalue())
    return buf.getvalue()


def decode_depth_zip(data: bytes) -> NDArray[np.float32]:
    """Disparity ``(N, H, W)`` float32 from depth zip bytes (entries in name order)."""
    exr = _openexr()
    frames = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in sorted(zf.namelist()):
            f = exr.File(io.BytesIO(zf.read(name)))
            frames.append(np.asarray(f.channels()[DEPTH_CHANNEL].pixels, dtype=np.float32))
    if not frames:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(frames)


def depth_from_disparity(disparity: ArrayLike) -> NDArray[np.float32]:
    """Depth ``clip(1 / disparity, 1e-3, 1e2)`` (SPEC.md §3); zero disparity gives 1e2."""
    d = np.asarray(disparity, dtype=np.float32)
    with np.errstate(divide="ignore"):
        return np.clip(1.0 / d, 1e-3, 1e2).astype(np.float32)


# --------------------------------------------------------------------------- writer / reader
def write_clip_annotations(
    annotation_dir: str | os.PathLike[str],
    ann: ClipAnnotations,
    *,
    depth_zip: str | os.PathLike[str] | None = None,
    dtype: Any = np.float32,
) -> dict[str, str]:
    """Write one clip's artifacts; return ``{file name: URI}`` of what was written.

    ``annotation_dir``: local folder or fsspec URL (``.../annotations/group_XXXX/{id}``).
    ``depth_zip``: where the depth zip goes (``.../depths/group_XXXX/{id}.zip``); needed
    when ``ann.disparity`` is set. Float arrays are stored as ``dtype`` (float32, as
    released). ``poses.npy`` is written last, as the completion marker.
    """
    ann.validate()
    base = os.fspath(annotation_dir)
    poses = np.asarray(ann.poses, dtype=np.float64)
    if ann.extrinsics is not None:
        extr = np.asarray(ann.extrinsics, dtype=np.float64)
    else:
        from spatialvid.processors.geometry.poses import poses7_to_c2w

        extr = poses7_to_c2w(poses)
    written: dict[str, str] = {}
    if ann.disparity is not None:
        if depth_zip is None:
            raise ValueError("ann.disparity is set: pass depth_zip= (depths/group_XXXX/{id}.zip)")
        written[posixpath.basename(os.fspath(depth_zip))] = _write_atomic(
            os.fspath(depth_zip), encode_depth_zip(ann.disparity)
        )
    if ann.dyn_masks is not None:
        written[DYN_MASKS] = _write_atomic(_join(base, DYN_MASKS), encode_dyn_masks(ann.dyn_masks))
    if ann.instructions is not None:
        text = json.dumps(ann.instructions, ensure_ascii=False, indent=2)
        written[INSTRUCTIONS] = _write_atomic(_join(base, INSTRUCTIONS), text.encode("utf-8"))
    written[INDEXES] = _write_atomic(_join(base, INDEXES), format_indexes(ann.frame_indexes).encode("ascii"))
    written[INTRINSICS] = _write_atomic(_join(base, INTRINSICS), _npy_bytes(np.asarray(ann.intrinsics, dtype=dtype)))
    written[EXTRINSICS] = _write_atomic(_join(base, EXTRINSICS), _npy_bytes(extr.astype(dtype)))
    written[POSES] = _write_atomic(_join(base, POSES), _npy_bytes(poses.astype(dtype)))
    return written


def read_clip_annotations(
    annotation_dir: str | os.PathLike[str],
    *,
    depth_zip: str | os.PathLike[str] | None = None,
    masks: bool = True,
) -> ClipAnnotations:
    """Read one clip's artifacts back (local folder or fsspec URL).

    Optional files that are absent come back as None (``extrinsics.npy`` is then derived
    from ``poses.npy``; a missing ``indexes.txt`` means every frame, 0..N-1). The depth
    zip is read only when ``depth_zip`` is given; masks are skipped with ``masks=False``.
    """
    base = os.fspath(annotation_dir)
    poses = _npy_load(_read(_join(base, POSES)))
    intrinsics = _npy_load(_read(_join(base, INTRINSICS)))
    extr_path = _join(base, EXTRINSICS)
    if _exists(extr_path):
        extrinsics = _npy_load(_read(extr_path))
    else:
        from spatialvid.processors.geometry.poses import poses7_to_c2w

        extrinsics = poses7_to_c2w(poses)
    idx_path = _join(base, INDEXES)
    frames = (
        parse_indexes(_read(idx_path).decode("ascii")) if _exists(idx_path) else np.arange(poses.shape[0])
    )
    mask_path = _join(base, DYN_MASKS)
    dyn = decode_dyn_masks(_read(mask_path)) if masks and _exists(mask_path) else None
    ins_path = _join(base, INSTRUCTIONS)
    instructions = json.loads(_read(ins_path).decode("utf-8")) if _exists(ins_path) else None
    disparity = decode_depth_zip(_read(os.fspath(depth_zip))) if depth_zip is not None else None
    return ClipAnnotations(
        poses=poses,
        intrinsics=intrinsics,
        frame_indexes=frames,
        dyn_masks=dyn,
        disparity=disparity,
        instructions=instructions,
        extrinsics=extrinsics,
    )


def write_caption_json(annotation_dir: str | os.PathLike[str], caption: dict[str, Any]) -> str:
    """Write a clip's released ``caption.json`` (atomically) into its annotation folder;
    returns its URI. ``caption`` uses the released key names (see
    ``spatialvid.processors.caption.export.caption_json``)."""
    text = json.dumps(caption, ensure_ascii=False, indent=2)
    return _write_atomic(_join(os.fspath(annotation_dir), CAPTION), text.encode("utf-8"))


def read_caption_json(annotation_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A clip's ``caption.json``, or None when there is none."""
    path = _join(os.fspath(annotation_dir), CAPTION)
    return json.loads(_read(path).decode("utf-8")) if _exists(path) else None
