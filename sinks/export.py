"""``spatialvid export``: a selection of clips to the released SpatialVID layout and Parquet.

Layout (SPEC.md §7)::

    OUT/videos/group_XXXX/{id}.mp4
    OUT/annotations/group_XXXX/{id}/{caption.json, dyn_masks.npz, indexes.txt,
                                     instructions.json, intrinsics.npy, poses.npy, extrinsics.npy}
    OUT/depths/group_XXXX/{id}.zip
    OUT/metadata.csv        one row per clip, the released column names (RELEASED_COLUMNS)
    OUT/metadata.parquet    the same rows (pyarrow, which chDB already depends on)
    OUT/manifest.jsonl      one line per file written: path, bytes, sha256 (appended as it goes)
    OUT/manifest.json       the summary: selection, clips, files, bytes, and the metadata checksums

The selection is any table or view with a ``clip_id`` column; by default the latest HQ
selection (``<db>.hq_<hq.name>``). Groups are ``group_{n:04d}`` with ``group_size`` clips
each, in clip-id order, so the same selection always lands in the same place.

Resumable: a file listed in ``manifest.jsonl`` that exists with its recorded size is
skipped; everything else is (re)written atomically (temporary name, then rename).
:func:`verify_export` checks every file against its checksum.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from spatialvid.config import Config
from spatialvid.stats import QueryFn, check_table

#: Warehouse column (snake_case) -> released metadata column name.
RELEASED_COLUMNS: dict[str, str] = {
    "clip_id": "id",
    "group_id": "group id",
    "video_path": "video path",
    "annotation_path": "annotation path",
    "depth_path": "depth path",
    "num_frames": "num frames",
    "fps": "fps",
    "resolution": "resolution",
    "timestamp_start": "timestamp start",
    "timestamp_end": "timestamp end",
    "aesthetic": "aesthetic score",
    "luminance_mean": "luminance score",
    "motion": "motion score",
    "ocr_ratio": "ocr score",
    "move_dist": "moveDist",
    "dist_level": "distLevel",
    "rot_angle": "rotAngle",
    "traj_turns": "trajTurns",
    "dynamic_ratio": "dynamicRatio",
    "motion_trends": "motionTrends",
    "scene_type_first": "sceneType",
    "lighting": "lighting",
    "time_of_day": "timeOfDay",
    "weather": "weather",
    "crowd_density": "crowdDensity",
}
ANNOTATION_FILES = ("poses.npy", "extrinsics.npy", "intrinsics.npy", "indexes.txt", "instructions.json", "dyn_masks.npz")


def selection_sql(db: str, table: str) -> str:
    """Everything the export needs per clip of ``table`` (latest rows, one per clip)."""
    check_table(table)
    return f"""
SELECT c.clip_id AS clip_id, c.video_id AS video_id, c.uri AS clip_uri, v.uri AS video_uri,
    c.frame_end - c.frame_start AS num_frames, c.fps AS fps, c.width AS width, c.height AS height,
    c.timestamp_start AS timestamp_start, c.timestamp_end AS timestamp_end,
    s.aesthetic AS aesthetic, s.luminance_mean AS luminance_mean, s.motion AS motion, s.ocr_ratio AS ocr_ratio,
    a.move_dist AS move_dist, a.dist_level AS dist_level, a.rot_angle AS rot_angle, a.traj_turns AS traj_turns,
    a.dynamic_ratio AS dynamic_ratio, a.motion_trends AS motion_trends, a.artifacts_uri AS artifacts_uri,
    k.cam_motion AS cam_motion, k.scene_desc AS scene_desc, k.opt_cam_motion AS opt_cam_motion,
    k.scene_summary AS scene_summary, k.motion_trends AS caption_trends, k.scene_tags AS scene_tags,
    k.shot_immersion AS shot_immersion, k.model_id AS llm, k.scene_type_first AS scene_type_first,
    k.scene_type_second AS scene_type_second, k.lighting AS lighting, k.time_of_day AS time_of_day,
    k.weather AS weather, k.crowd_density AS crowd_density, k.clip_id != '' AS has_caption
FROM (SELECT DISTINCT clip_id FROM {table}) AS sel
INNER JOIN (SELECT * FROM {db}.clips ORDER BY clip_id, produced_at DESC LIMIT 1 BY clip_id) AS c ON c.clip_id = sel.clip_id
LEFT JOIN (SELECT video_id, argMax(uri, produced_at) AS uri FROM {db}.videos GROUP BY video_id) AS v ON v.video_id = c.video_id
LEFT JOIN (SELECT * FROM {db}.clip_scores ORDER BY clip_id, scored_at DESC LIMIT 1 BY clip_id) AS s ON s.clip_id = c.clip_id
LEFT JOIN (SELECT * FROM {db}.clip_annotations WHERE success ORDER BY clip_id, annotated_at DESC LIMIT 1 BY clip_id) AS a
    ON a.clip_id = c.clip_id
LEFT JOIN (SELECT * FROM {db}.clip_captions ORDER BY clip_id, captioned_at DESC LIMIT 1 BY clip_id) AS k ON k.clip_id = c.clip_id
WHERE c.clip_id IN (SELECT clip_id FROM {table})
ORDER BY c.clip_id"""


def caption_json(row: dict[str, Any]) -> dict[str, Any]:
    """``caption.json`` with the released key names (SPEC.md §5)."""
    return {
        "CamMotion": row["cam_motion"], "SceneDesc": row["scene_desc"], "OptCamMotion": row["opt_cam_motion"],
        "SceneSummary": row["scene_summary"], "MotionTrends": list(row["caption_trends"] or []),
        "SceneTags": list(row["scene_tags"] or []), "ShotImmersion": row["shot_immersion"], "LLM": row["llm"],
        "CategoryTag": {"sceneType": {"first": row["scene_type_first"], "second": row["scene_type_second"]},
                        "lighting": row["lighting"], "timeOfDay": row["time_of_day"], "weather": row["weather"],
                        "crowdDensity": row["crowd_density"]},
    }


@dataclass
class ExportResult:
    """What an export run did."""

    out_dir: Path
    clips: int = 0
    written: int = 0
    skipped: int = 0
    missing: list[str] = field(default_factory=list)  # "clip: what" for sources that do not exist
    bytes_written: int = 0


class _Manifest:
    """``manifest.jsonl``: appended per file, read back on resume."""

    def __init__(self, out: Path) -> None:
        self.path = out / "manifest.jsonl"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    e = json.loads(line)
                    self.entries[e["path"]] = e
                except (ValueError, KeyError):
                    continue  # a line cut short by a crash: that file is redone
            # Rewrite without the damaged lines, so appends start on a fresh line.
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(e) + "\n" for e in self.entries.values()))
            os.replace(tmp, self.path)
        self._fh = self.path.open("a")

    def done(self, out: Path, rel: str) -> bool:
        e = self.entries.get(rel)
        p = out / rel
        return e is not None and p.is_file() and p.stat().st_size == e["bytes"]

    def add(self, rel: str, size: int, sha: str, clip_id: str) -> None:
        e = {"path": rel, "bytes": size, "sha256": sha, "clip_id": clip_id}
        self.entries[rel] = e
        self._fh.write(json.dumps(e) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_from(dest: Path, produce: Callable[[Path], None]) -> tuple[int, str]:
    """Run ``produce(tmp)`` then rename into ``dest``; returns (bytes, sha256)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        produce(Path(tmp))
        os.chmod(tmp, 0o644)
        size, sha = os.path.getsize(tmp), _sha256_file(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, sha


def _local(uri: str) -> Path | None:
    if not uri:
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        return None  # remote artifact stores: fetched below through fsspec
    return Path(uri)


def _copy_from_uri(uri: str) -> Callable[[Path], None]:
    p = _local(uri)
    if p is not None:
        return lambda tmp: shutil.copyfile(p, tmp)

    def fetch(tmp: Path) -> None:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(uri)
        fs.get_file(path, str(tmp))
    return fetch


def _uri_exists(uri: str) -> bool:
    p = _local(uri)
    if p is not None:
        return p.is_file()
    try:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(uri)
        return bool(fs.exists(path))
    except Exception:
        return False


def _cut_clip(src: str, start: float, end: float) -> Callable[[Path], None]:
    """Cut a clip out of its source video (stream copy: cuts land on key frames)."""
    def run(tmp: Path) -> None:
        if not shutil.which("ffmpeg"):
            raise FileNotFoundError("cutting clips out of source videos needs ffmpeg (apt-get install ffmpeg)")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{start:.3f}", "-to", f"{end:.3f}",
                        "-i", src, "-c", "copy", "-an", "-f", "mp4", str(tmp)], check=True)
    return run


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if "://" in base and not base.startswith("file://") else \
        os.path.join(_local(base) or base, *parts)


def export(query: QueryFn, cfg: Config, out_dir: str | os.PathLike[str], table: str | None = None,
           group_size: int = 1000, videos: bool = True, parquet: bool = True,
           progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None) -> ExportResult:
    """Export the clips of ``table`` (default: the latest HQ selection) to ``out_dir``."""
    db = cfg.warehouse.database
    table = table or f"{db}.hq_{cfg.hq.name}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = query(selection_sql(db, table), None)
    rows = [dict(zip(res["columns"], r)) for r in res["rows"]]
    result = ExportResult(out_dir=out, clips=len(rows))
    manifest = _Manifest(out)
    meta: list[dict[str, Any]] = []
    it: Iterable[Any] = enumerate(rows)
    if progress:
        it = progress(it, len(rows))
    try:
        for i, row in it:
            cid = row["clip_id"]
            group = f"group_{i // group_size + 1:04d}"
            files: list[tuple[str, Callable[[Path], None] | None, str]] = []  # rel path, producer, what
            video_rel = f"videos/{group}/{cid}.mp4"
            if videos:
                src = str(row["clip_uri"] or "")
                if src and src != row["video_uri"]:
                    files.append((video_rel, _copy_from_uri(src) if _uri_exists(src) else None, "clip file"))
                elif row["video_uri"] and _uri_exists(str(row["video_uri"])):
                    files.append((video_rel, _cut_clip(str(_local(str(row["video_uri"])) or row["video_uri"]),
                                                       float(row["timestamp_start"]), float(row["timestamp_end"])),
                                  "clip cut from its source"))
                else:
                    files.append((video_rel, None, "video file"))
            ann_rel = f"annotations/{group}/{cid}"
            art = str(row["artifacts_uri"] or "")
            has_ann = bool(art)
            if has_ann:
                for name in ANNOTATION_FILES:
                    src = _join(art, name)
                    if _uri_exists(src):
                        files.append((f"{ann_rel}/{name}", _copy_from_uri(src), name))
                    elif name == "poses.npy":
                        files.append((f"{ann_rel}/{name}", None, name))
                # The artifact store keeps the release layout: depths/<group>/<id>.zip beside annotations/.
                depth_src = _depth_uri(art)
                if depth_src and _uri_exists(depth_src):
                    files.append((f"depths/{group}/{cid}.zip", _copy_from_uri(depth_src), "depth zip"))
            if row["has_caption"]:
                text = json.dumps(caption_json(row), ensure_ascii=False, indent=2).encode()
                files.append((f"{ann_rel}/caption.json", lambda tmp, t=text: tmp.write_bytes(t), "caption.json"))
            written_here = set()
            for rel, produce, what in files:
                if produce is None:
                    result.missing.append(f"{cid}: {what} not found")
                    continue
                if manifest.done(out, rel):
                    result.skipped += 1
                    written_here.add(rel)
                    continue
                size, sha = _atomic_from(out / rel, produce)
                manifest.add(rel, size, sha, cid)
                result.written += 1
                result.bytes_written += size
                written_here.add(rel)
            meta.append({
                **{k: row.get(k) for k in RELEASED_COLUMNS if k in row},
                "group_id": group,
                "video_path": video_rel if video_rel in written_here else "",
                "annotation_path": ann_rel if any(r.startswith(ann_rel + "/") for r in written_here) else "",
                "depth_path": f"depths/{group}/{cid}.zip" if f"depths/{group}/{cid}.zip" in written_here else "",
                "resolution": f"{row['width']}x{row['height']}",
                "motion_trends": ", ".join(row["motion_trends"] or []),
            })
    finally:
        manifest.close()
    metadata = _write_metadata(out, meta, parquet)
    summary = {
        "selection": table, "database": db, "clips": result.clips, "group_size": group_size,
        "files": len(manifest.entries), "bytes": sum(e["bytes"] for e in manifest.entries.values()),
        "missing": result.missing,
        "metadata": metadata,
        "columns": RELEASED_COLUMNS,
    }
    (out / "manifest.json").write_text(json.dumps(summary, indent=2))
    return result


def _depth_uri(annotation_dir: str) -> str | None:
    parts = annotation_dir.rstrip("/").replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] != "annotations":
        return None
    return "/".join(parts[:-3] + ["depths", parts[-2], parts[-1] + ".zip"])


def _write_metadata(out: Path, meta: list[dict[str, Any]], parquet: bool) -> dict[str, dict[str, Any]]:
    """Write ``metadata.csv`` (and ``metadata.parquet``); returns name -> bytes and sha256."""
    written: dict[str, dict[str, Any]] = {}
    cols = list(RELEASED_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([RELEASED_COLUMNS[c] for c in cols])
    for m in meta:
        w.writerow(["" if m.get(c) is None else m.get(c) for c in cols])
    size, sha = _atomic_from(out / "metadata.csv", lambda tmp: tmp.write_text(buf.getvalue()))
    written["metadata.csv"] = {"bytes": size, "sha256": sha}
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tbl = pa.table({RELEASED_COLUMNS[c]: [m.get(c) for m in meta] for c in cols})
        size, sha = _atomic_from(out / "metadata.parquet", lambda tmp: pq.write_table(tbl, tmp))
        written["metadata.parquet"] = {"bytes": size, "sha256": sha}
    return written


def verify_export(out_dir: str | os.PathLike[str]) -> list[str]:
    """Check every file of ``manifest.jsonl`` and the metadata; returns the problems found."""
    out = Path(out_dir)
    problems = []
    entries: dict[str, dict[str, Any]] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        e = json.loads(line)
        entries[e["path"]] = e
    for rel, e in entries.items():
        p = out / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != e["bytes"] or _sha256_file(p) != e["sha256"]:
            problems.append(f"{rel}: checksum mismatch")
    summary = json.loads((out / "manifest.json").read_text())
    for name, m in summary.get("metadata", {}).items():
        if _sha256_file(out / name) != m["sha256"]:
            problems.append(f"{name}: checksum mismatch")
    return problems
