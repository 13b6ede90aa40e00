"""Synthetic warehouse populations built from the real record models (never hand-written DDL).

A population is a skewed mix of videos, clips, scores, annotations and captions, as a
crawl of walking tours would give: mostly urban daytime clips walking forward. Tests
insert it into the real chDB warehouse with :func:`insert_records` (column-wise, the
way the sink does) or produce it to the real broker for the sink to write.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

from spatialvid.schemas.records import (AnnotationRecord, CaptionRecord, ClipRecord, Record, ScoreRecord,
                                        VideoRecord)

SKEW: dict[str, list[tuple[str, float]]] = {
    "scene_type_first": [("Urban", 0.62), ("Natural Landscape", 0.14), ("Interior", 0.1), ("Rural", 0.06),
                         ("Waterfront", 0.05), ("Unknown", 0.03)],
    "time_of_day": [("Daytime", 0.7), ("Dusk/Evening", 0.12), ("Night", 0.1), ("Dawn/Morning", 0.06), ("Unknown", 0.02)],
    "weather": [("Sunny", 0.55), ("Cloudy", 0.3), ("Rainy", 0.07), ("Foggy", 0.04), ("Snowy", 0.03), ("Unknown", 0.01)],
    "crowd_density": [("Moderate", 0.45), ("Sparse", 0.3), ("Crowded", 0.15), ("Deserted", 0.08), ("Unknown", 0.02)],
    "lighting": [("Bright", 0.8), ("Dim/Dark", 0.17), ("Unknown", 0.03)],
    "motion_trend": [("Dolly In", 0.55), ("Pan Right", 0.12), ("Pan Left", 0.1), ("Truck Left", 0.08),
                     ("Truck Right", 0.07), ("Pedestal Up", 0.04), ("Stay", 0.04)],
    "traj_turns": [(0, 0.6), (1, 0.22), (2, 0.1), (3, 0.05), (4, 0.03)],
    "dist_level": [(2, 0.5), (3, 0.25), (1, 0.15), (4, 0.07), (0, 0.03)],
}


def _pick(rng: random.Random, name: str) -> Any:
    values, weights = zip(*SKEW[name])
    return rng.choices(values, weights)[0]


def population(n_clips: int, seed: int = 0, clips_per_video: int = 8, prefix: str = "v",
               t0: datetime | None = None, artifacts_uri: str = "") -> list[Record]:
    """Videos, clips, scores, annotations and captions of ``n_clips`` skewed clips.

    Every clip is scored; about 85% pass the default filters; 95% of those get an
    annotation (5% of them anomalous or failed) and a caption.
    """
    rng = random.Random(seed)
    t0 = t0 or datetime.now(timezone.utc)
    out: list[Record] = []
    n_videos = (n_clips + clips_per_video - 1) // clips_per_video
    made = 0
    for v in range(n_videos):
        vid = f"{prefix}{v:06d}-{seed:x}"
        k = min(clips_per_video, n_clips - made)
        durs = [round(rng.uniform(3.0, 15.0), 3) for _ in range(k)]
        fps = 30.0
        out.append(VideoRecord(video_id=vid, uri=f"/data/{vid}.mp4", source="crawl", duration_s=sum(durs) + 5,
                               fps=fps, width=1280, height=720, num_frames=int((sum(durs) + 5) * fps), codec="h264",
                               query="walk", produced_at=t0))
        ts = 0.0
        for i, d in enumerate(durs):
            cid = f"{vid}_{i}"
            fs, fe = int(ts * fps), int((ts + d) * fps)
            out.append(ClipRecord(clip_id=cid, video_id=vid, index=i, num_clips=k, uri=f"/data/{vid}.mp4",
                                  frame_start=fs, frame_end=fe, timestamp_start=ts, timestamp_end=ts + d, fps=fps,
                                  width=1280, height=720, method="synthetic", produced_at=t0))
            ts += d
            aes = rng.gauss(5.0, 0.6)
            lum = rng.uniform(10, 150)
            ocr = 0.0 if rng.random() < 0.85 else rng.uniform(0.0, 0.5)
            mot = rng.uniform(0.5, 16.0)
            checks = {"aesthetic": aes >= 4.0, "luminance": 20 <= lum <= 140, "ocr": ocr <= 0.3,
                      "motion": 2.0 <= mot <= 14.0}
            passed = all(checks.values())
            scored_at = t0 + timedelta(seconds=rng.uniform(0, 600))
            out.append(ScoreRecord(
                clip_id=cid, video_id=vid, model_id="synthetic", model_version="synthetic-1", duration_s=d,
                num_frames=fe - fs, aesthetic=aes, aesthetic_model="synthetic-aes", aesthetic_pass=checks["aesthetic"],
                luminance_mean=lum, luminance_min=lum - 5, luminance_max=lum + 5, luminance_pass=checks["luminance"],
                ocr_ratio=ocr, ocr_model="synthetic-ocr", ocr_pass=checks["ocr"], motion=mot,
                motion_pass=checks["motion"], passed=passed,
                reject_reasons=[f"{k} out of range" for k, ok in checks.items() if not ok], scored_at=scored_at))
            if not passed or rng.random() < 0.05:
                continue
            turns, level, trend = _pick(rng, "traj_turns"), _pick(rng, "dist_level"), _pick(rng, "motion_trend")
            ok = rng.random() > 0.03
            out.append(AnnotationRecord(
                clip_id=cid, video_id=vid, model_id="synthetic-geo", model_version="synthetic-geo-1", success=ok,
                registered_share=1.0, num_poses=int(d * 5), move_dist=[0.05, 0.2, 0.6, 1.5, 3.0][level] * rng.uniform(0.9, 1.5),
                dist_level=level, rot_angle=rng.uniform(0, 3), traj_turns=turns, anomaly=rng.random() < 0.02,
                dynamic_ratio=rng.uniform(0, 0.3), motion_trends=[trend], instruction_steps={trend: int(d * 5)},
                artifacts_uri=artifacts_uri, annotated_at=scored_at + timedelta(seconds=30)))
            words = lambda n: " ".join(rng.choice(["the", "camera", "moves", "street", "slowly", "forward", "city"])  # noqa: E731
                                       for _ in range(n))
            out.append(CaptionRecord(
                clip_id=cid, video_id=vid, model_id="synthetic-vlm", model_version="synthetic-vlm-1",
                cam_motion=words(60), scene_desc=words(100), opt_cam_motion=words(rng.randint(35, 65)),
                scene_summary=words(rng.randint(20, 36)), motion_trends=[trend], scene_tags=["street"],
                shot_immersion=words(rng.randint(70, 110)), scene_type_first=_pick(rng, "scene_type_first"),
                scene_type_second="street", lighting=_pick(rng, "lighting"), time_of_day=_pick(rng, "time_of_day"),
                weather=_pick(rng, "weather"), crowd_density=_pick(rng, "crowd_density"),
                captioned_at=scored_at + timedelta(seconds=60)))
        made += k
    return out


def insert_records(client: Any, database: str, records: Iterable[Record]) -> dict[str, int]:
    """Insert records into their tables column-wise (as the sink does); rows per table."""
    by_model: dict[type[Record], list[Record]] = defaultdict(list)
    for r in records:
        by_model[type(r)].append(r)
    counts = {}
    for model, rows in by_model.items():
        cols = list(model.model_fields)
        data = [[getattr(r, c) for r in rows] for c in cols]
        client.insert(f"{database}.{model.table}", data, column_names=cols, column_oriented=True)
        counts[model.table] = len(rows)
    return counts


def of_type(records: Sequence[Record], model: type[Record]) -> list[Any]:
    return [r for r in records if isinstance(r, model)]
