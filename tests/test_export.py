"""`spatialvid export`: a selection to the released layout and Parquet, resumable and checksummed."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from spatialvid.config import Config
from spatialvid.hq import select_hq
from spatialvid.schemas.records import CaptionRecord, ClipRecord
from spatialvid.warehouse import run_readonly

from .synthetic import insert_records, of_type, population


def _annotate(root: Path, clip_id: str) -> str:
    """Real release-layout artifacts (with a depth zip when OpenEXR is there) for one clip."""
    from spatialvid.sinks.release import ClipAnnotations, release_paths, write_clip_annotations

    n = 12
    poses = np.zeros((n, 7))
    poses[:, 0] = 0.1 * np.arange(n)
    poses[:, 6] = 1.0
    paths = release_paths(root, clip_id, 3)
    try:
        import OpenEXR  # noqa: F401
        disparity = np.full((n, 8, 12), 0.5, dtype=np.float32)
    except ImportError:
        disparity = None
    write_clip_annotations(paths.annotation_dir, ClipAnnotations(
        poses=poses, intrinsics=np.tile([0.6, 1.0, 0.5, 0.5], (n, 1)), frame_indexes=np.arange(n) * 6,
        dyn_masks=np.zeros((n, 8, 12), bool), disparity=disparity, instructions={"0->11": ["Truck Right"]}),
        depth_zip=paths.depth_zip if disparity is not None else None)
    return paths.annotation_dir


def test_export_hq_to_release_layout_and_resume(cfg: Config, warehouse, tmp_path: Path, sample_videos) -> None:  # type: ignore[no-untyped-def]
    from spatialvid.sinks.export import RELEASED_COLUMNS, export, verify_export

    db = cfg.warehouse.database
    records = population(400, seed=31, clips_per_video=4)
    store = tmp_path / "artifacts"
    # Materialised clip files for every clip; real annotation folders for the annotated ones.
    walk = str(sample_videos["walk"])
    records = [r.model_copy(update={"uri": walk}) if isinstance(r, ClipRecord) else r for r in records]
    annotated = {r.clip_id for r in records if r.topic == "annotations" and r.success}
    records = [r.model_copy(update={"artifacts_uri": _annotate(store, r.clip_id)})
               if r.topic == "annotations" and r.success else r for r in records]
    insert_records(warehouse, db, records)
    hq = select_hq(warehouse, cfg, hours=0.05, seed=4)
    assert 5 <= hq.clips <= 40
    lock = threading.Lock()
    q = lambda sql, p: run_readonly(warehouse, sql, p, lock)  # noqa: E731
    out = tmp_path / "release"
    first = export(q, cfg, out, group_size=8)

    ids = [r[0] for r in warehouse.query(f"SELECT clip_id FROM {hq.table} ORDER BY clip_id").result_rows]
    assert first.clips == len(ids) and not first.missing, first.missing
    rows = list(csv.DictReader((out / "metadata.csv").open()))
    assert [r["id"] for r in rows] == ids
    assert list(rows[0]) == list(RELEASED_COLUMNS.values())
    captions = {c.clip_id: c for c in of_type(records, CaptionRecord)}
    for i, r in enumerate(rows):
        group = f"group_{i // 8 + 1:04d}"
        assert r["group id"] == group and r["resolution"] == "1280x720"
        assert (out / r["video path"]).read_bytes()[4:8] == b"ftyp", r["video path"]
        ann = out / "annotations" / group / r["id"]
        assert r["id"] in annotated and r["annotation path"] == f"annotations/{group}/{r['id']}"
        assert np.load(ann / "poses.npy").shape == (12, 7)
        assert (ann / "indexes.txt").read_text().splitlines()[1] == "1 6"
        cap = json.loads((ann / "caption.json").read_text())
        assert cap["CategoryTag"]["weather"] == captions[r["id"]].weather
        assert cap["OptCamMotion"] == captions[r["id"]].opt_cam_motion
        if r["depth path"]:
            assert (out / r["depth path"]).stat().st_size > 0
    import pyarrow.parquet as pq

    table = pq.read_table(out / "metadata.parquet")
    assert table.column("id").to_pylist() == ids and "moveDist" in table.column_names
    assert verify_export(out) == []

    # Resume: a lost file and a crash mid-manifest are redone; nothing else is rewritten.
    lost = out / rows[0]["video path"]
    lost.unlink()
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = export(q, cfg, out, group_size=8)
    assert again.written == 2 and again.skipped == first.written - 2, (again.written, again.skipped)
    assert verify_export(out) == []
    # A changed byte is caught by the checksums.
    victim = out / rows[-1]["annotation path"] / "intrinsics.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert verify_export(out) == [f"{rows[-1]['annotation path']}/intrinsics.npy: checksum mismatch"]


def test_export_cuts_clips_from_the_source_when_not_materialised(cfg: Config, warehouse, tmp_path: Path,
                                                                 sample_videos) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from spatialvid.sinks.export import export

    if not shutil.which("ffmpeg"):
        pytest.skip("cutting clips needs ffmpeg (apt-get install ffmpeg)")
    db = cfg.warehouse.database
    walk = str(sample_videos["walk"])
    records = population(8, seed=5, clips_per_video=8)
    fixed = []
    for r in records:
        if r.topic == "videos":
            r = r.model_copy(update={"uri": walk})
        elif r.topic == "clips":
            r = r.model_copy(update={"uri": walk, "timestamp_start": 1.0, "timestamp_end": 3.0})
        fixed.append(r)
    insert_records(warehouse, db, fixed)
    res = export(lambda s, p: run_readonly(warehouse, s, p), cfg, tmp_path / "out", table=f"{db}.clips", parquet=False)
    assert res.clips == 8 and res.written >= 8
    import av

    video = next((tmp_path / "out" / "videos").rglob("*.mp4"))
    with av.open(str(video)) as c:
        assert 1.0 <= float(c.duration or 0) / 1e6 <= 3.5
