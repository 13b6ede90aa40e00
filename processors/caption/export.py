"""The released ``caption.json`` of a clip (SPEC.md §5) from a :class:`CaptionRecord`.

Key names as released: ``CamMotion``, ``SceneDesc``, ``OptCamMotion``, ``SceneSummary``,
``MotionTrends``, ``SceneTags``, ``ShotImmersion``, ``LLM`` and ``CategoryTag`` =
``{sceneType: {first, second}, lighting, timeOfDay, weather, crowdDensity}``.
"""

from __future__ import annotations

from typing import Any

from spatialvid.schemas.records import CaptionRecord

__all__ = ["CAPTION_KEYS", "caption_json", "record_fields_from_caption_json"]

CAPTION_KEYS = ("CamMotion", "SceneDesc", "OptCamMotion", "SceneSummary", "MotionTrends", "SceneTags",
                "ShotImmersion", "LLM", "CategoryTag")


def caption_json(rec: CaptionRecord) -> dict[str, Any]:
    """The released caption dict of ``rec`` (fields that were not generated stay empty
    strings, empty lists and "Unknown", as the release uses them)."""
    return {
        "CamMotion": rec.cam_motion,
        "SceneDesc": rec.scene_desc,
        "OptCamMotion": rec.opt_cam_motion,
        "SceneSummary": rec.scene_summary,
        "MotionTrends": list(rec.motion_trends),
        "SceneTags": list(rec.scene_tags),
        "ShotImmersion": rec.shot_immersion,
        "LLM": rec.llm,
        "CategoryTag": {
            "sceneType": {"first": rec.scene_type_first, "second": rec.scene_type_second},
            "lighting": rec.lighting,
            "timeOfDay": rec.time_of_day,
            "weather": rec.weather,
            "crowdDensity": rec.crowd_density,
        },
    }


def record_fields_from_caption_json(data: dict[str, Any]) -> dict[str, Any]:
    """The CaptionRecord fields of a released ``caption.json`` (the inverse mapping)."""
    tag = data.get("CategoryTag") or {}
    st = tag.get("sceneType") or {}
    return {
        "cam_motion": data.get("CamMotion", ""), "scene_desc": data.get("SceneDesc", ""),
        "opt_cam_motion": data.get("OptCamMotion", ""), "scene_summary": data.get("SceneSummary", ""),
        "motion_trends": list(data.get("MotionTrends") or []), "scene_tags": list(data.get("SceneTags") or []),
        "shot_immersion": data.get("ShotImmersion", ""), "llm": data.get("LLM", ""),
        "scene_type_first": st.get("first", "Unknown"), "scene_type_second": st.get("second", ""),
        "lighting": tag.get("lighting", "Unknown"), "time_of_day": tag.get("timeOfDay", "Unknown"),
        "weather": tag.get("weather", "Unknown"), "crowd_density": tag.get("crowdDensity", "Unknown"),
    }
