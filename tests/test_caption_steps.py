"""The caption steps: direction check, offline geometry caption, tag vocabulary, camera
positions, frame sampling, and the three steps against a stand-in server that speaks
the real chat-completions protocol (image parts as base64 data URLs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from spatialvid.config import CaptionConfig
from spatialvid.processors.caption.captioner import Captioner, ClipRef
from spatialvid.processors.caption.check import check_directions, stated_directions
from spatialvid.processors.caption.export import CAPTION_KEYS, caption_json, record_fields_from_caption_json
from spatialvid.processors.caption.offline import OFFLINE_VERSION, geometry_caption
from spatialvid.processors.caption.steps import (PROMPT_VERSION, VOCAB, camera_positions, format_positions,
                                                 frames_to_data_urls, repair_tags, sample_frames)
from spatialvid.processors.geometry.poses import quat_multiply

from .caption_data import annotated_clip, trajectory
from .caption_standin import Reply, Seen, StandInServer


# --------------------------------------------------------------------------- the direction check
@pytest.mark.parametrize("text, expected", [
    ("The camera pans left slowly, then moves forward along the street.", {("lr", -1), ("io", 1)}),
    ("A tall building stands on the left; people walk in the square.", set()),
    ("The camera slowly trucks to the right and tilts up toward the sky.", {("lr", 1), ("ud", 1)}),
    ("slight left translate", {("lr", -1)}),
    ("The camera does not move left; it dollies out.", {("io", -1)}),
    ("The camera pulls back and descends.", {("io", -1), ("ud", -1)}),
])
def test_stated_directions_are_read_where_a_motion_verb_governs_them(text: str, expected: set) -> None:
    assert set(stated_directions(text)) == expected, text


def test_direction_check_catches_a_planted_contradiction() -> None:
    steps = {"Truck Left": 50, "Stay": 9}
    bad = check_directions("The camera glides steadily to the right past the shops.", steps, 59)
    assert not bad.passed and bad.contradictions == ("says right, measured left",), bad.detail()
    good = check_directions("The camera glides steadily to the left past the shops.", steps, 59)
    assert good.passed, good.detail()
    # a direction the instructions show at all (even briefly) is no contradiction
    mixed = check_directions("It moves left, then briefly right.", {"Truck Left": 50, "Truck Right": 3}, 59)
    assert mixed.passed, mixed.detail()
    # in/out and up/down
    assert not check_directions("The camera pulls back from the door.", {"Dolly In": 40}, 59).passed
    assert not check_directions("The camera descends toward the plaza.", {"Pedestal Up": 40}, 59).passed


# --------------------------------------------------------------------------- offline default
@pytest.mark.parametrize("motion, phrase", [("left", "moves to the left"), ("forward", "moves forward"),
                                            ("up", "moves up"), ("static", "holds still")])
def test_offline_caption_is_written_from_the_geometry(tmp_path: Path, motion: str, phrase: str) -> None:
    ann = annotated_clip(tmp_path, f"clip_{motion}", motion)
    cap = Captioner(CaptionConfig())
    rec = cap.caption(ann)
    assert phrase in rec.opt_cam_motion, f"{motion}: {rec.opt_cam_motion!r}"
    assert rec.geometry_check_passed, rec.geometry_check_detail
    assert rec == cap.caption(ann).model_copy(update={"captioned_at": rec.captioned_at}), "offline caption not deterministic"
    # nothing pretends to have seen the frames
    assert (rec.cam_motion, rec.scene_desc, rec.scene_summary, rec.shot_immersion, rec.scene_tags) == ("", "", "", "", [])
    assert not (rec.vision_generated or rec.refine_generated or rec.tags_generated)
    assert rec.caption_mode == "offline" and rec.model_version == OFFLINE_VERSION and rec.llm == ""
    assert rec.scene_type_first == rec.lighting == rec.weather == "Unknown"
    assert rec.opt_cam_motion_words == len(rec.opt_cam_motion.split()) > 5
    assert bool(rec.motion_trends) == (motion != "static"), rec.motion_trends


def test_offline_caption_follows_the_order_of_the_instructions(tmp_path: Path) -> None:
    ann = annotated_clip(tmp_path, "c", "forward")
    text = geometry_caption(ann, {"0->20": ["Dolly In"], "20->40": ["Truck Left", "Pan Left"], "40->60": ["Stay"]})
    assert re.search(r"At first the camera moves \w* ?forward; then it moves .*to the left and pans .*left; finally it holds still", text), text


# --------------------------------------------------------------------------- tags, positions
def test_tags_are_repaired_onto_the_vocabulary_or_rejected() -> None:
    cat, repaired = repair_tags({"sceneType": {"first": "city", "second": "Street Scene"}, "lighting": "dark",
                                 "timeOfDay": "Daytime", "weather": "overcast", "crowdDensity": "busy"})
    assert cat == {"sceneType": {"first": "Urban", "second": "Street Scene"}, "lighting": "Dim/Dark",
                   "timeOfDay": "Daytime", "weather": "Cloudy", "crowdDensity": "Crowded"}
    assert len(repaired) == 4
    with pytest.raises(ValueError, match="first 'Spaceship' is not one of") as info:
        repair_tags({"sceneType": {"first": "Spaceship", "second": "x"}, "lighting": "Bright", "timeOfDay": "Night",
                     "weather": "Sunny or Rainy", "crowdDensity": "Sparse"})
    assert "weather 'Sunny or Rainy'" in str(info.value)  # ambiguous: not guessed


def test_camera_positions_are_in_the_first_cameras_frame() -> None:
    """A camera moving forward along its own axis reads as z increasing, whatever the
    world frame (here rotated 90 degrees about y and shifted)."""
    poses = trajectory("forward", 30)
    rot = np.array([0.0, np.sin(np.pi / 4), 0.0, np.cos(np.pi / 4)])  # 90 degrees about y
    from spatialvid.processors.geometry.poses import camera_centers, quat_rotate

    world = poses.copy()
    world[:, 3:7] = quat_multiply(poses[:, 3:7], np.broadcast_to(rot, (30, 4)))  # R_w2c' = R_w2c R_rot
    c = camera_centers(poses)
    c_world = quat_rotate(np.broadcast_to([-rot[0], -rot[1], -rot[2], rot[3]], (30, 4)), c) + [5.0, -2.0, 1.0]
    world[:, :3] = -quat_rotate(world[:, 3:7], c_world)
    pos = camera_positions(world, stride=5)
    assert pos.shape == (6, 3)
    assert np.allclose(pos[:, :2], 0, atol=1e-9) and np.all(np.diff(pos[:, 2]) > 0), pos
    text = format_positions(pos)
    assert text.splitlines()[2] == "z: 0 200 400 600 800 1000", text


def test_frames_are_sampled_at_about_one_per_second(sample_videos: dict[str, Path]) -> None:
    frames = sample_frames(str(sample_videos["walk"]), 24, 24 + 5 * 24, 24.0)
    assert len(frames) == 5 and all(f.shape == (360, 640, 3) for f in frames)
    urls = frames_to_data_urls(frames)
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)


# --------------------------------------------------------------------------- the three steps
VISION = {"CamMotion": "The camera glides to the right along a row of shopfronts, steady and slow.",
          "SceneDesc": "A sunny city street with shopfronts, parked cars and a few pedestrians in daylight."}
CONTRADICTING = {"OptCamMotion": "The camera moves steadily to the right past the shops.",
                 "SceneSummary": "A sunny shopping street.", "MotionTrends": ["right translate"],
                 "SceneTags": ["city street", "daytime"], "ShotImmersion": "We drift along sunlit shopfronts."}
AGREEING = dict(CONTRADICTING, OptCamMotion="The camera moves steadily to the left past the shops.",
                MotionTrends=["left translate"])
TAGS = {"sceneType": {"first": "Urban", "second": "Shopping Street"}, "lighting": "Bright", "timeOfDay": "day",
        "weather": "Sunny", "crowdDensity": "Sparse"}


def scripted_models(seen: Seen) -> Reply:
    """Stand-in for the remote models: a vision answer for image requests, a refine answer
    (contradicting the geometry unless told the measured motion), tags otherwise."""
    content = seen.body["messages"][0]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    if seen.images:
        return Reply(content=json.dumps(VISION))
    if "OptCamMotion" in text:
        return Reply(content=json.dumps(AGREEING if "measured camera motion" in text else CONTRADICTING))
    return Reply(content="```json\n" + json.dumps(TAGS) + "\n```")


def test_three_steps_against_a_stand_in(tmp_path: Path, sample_videos: dict[str, Path]) -> None:
    ann = annotated_clip(tmp_path, "walk_0", "left")
    with StandInServer(default=scripted_models) as srv:
        cfg = CaptionConfig(vlm_base_url=srv.base_url, vlm_model="standin-vlm", llm_base_url=srv.base_url,
                            llm_model="standin-llm", backoff_s=0.01, seed=3, llm_price_in=1.0, llm_price_out=2.0)
        cap = Captioner(cfg, clip_resolver=lambda cid: ClipRef(str(sample_videos["walk"]), 0, 6 * 24, 24.0))
        rec = cap.caption(ann)
        cap.close()
        seen = list(srv.seen)
    assert all(not s.problems for s in seen), [s.problems for s in seen]
    # step 1: about 1 fps at 640x360, as base64 JPEG data URLs, to the vision model
    vision = [s for s in seen if s.images]
    assert len(vision) == 1 and vision[0].body["model"] == "standin-vlm"
    assert len(vision[0].images) == 6 and set(vision[0].images) == {(640, 360)}
    # step 2: positions and intensity in the prompt; the planted contradiction is regenerated
    refine = [s for s in seen if "OptCamMotion" in str(s.body["messages"][0]["content"]) and not s.images]
    assert len(refine) == 2, "expected one regeneration after the contradiction"
    first, second = (r.body["messages"][0]["content"] for r in refine)
    assert "x: 0 -" in first and "Motion intensity (distLevel, 0 to 4): 4" in first and VISION["SceneDesc"] in first
    assert "measured camera motion" not in first and "Truck Left" in second and "says right, measured left" in second
    assert refine[0].body["temperature"] == 0.1 and refine[0].body["model"] == "standin-llm"
    # the record
    assert rec.cam_motion == VISION["CamMotion"] and rec.scene_desc == VISION["SceneDesc"]
    assert rec.opt_cam_motion == AGREEING["OptCamMotion"] and rec.motion_trends == ["left translate"]
    assert rec.geometry_check_passed is True and rec.geometry_regenerations == 1
    assert (rec.scene_type_first, rec.scene_type_second, rec.time_of_day) == ("Urban", "Shopping Street", "Daytime")
    assert rec.tags_repaired == ["timeOfDay: 'day' -> 'Daytime'"]
    assert rec.vision_generated and rec.refine_generated and rec.tags_generated and rec.caption_mode == "vlm+llm"
    assert rec.llm == "standin-llm" and rec.model_id == "standin-vlm+standin-llm"
    assert rec.prompt_version == PROMPT_VERSION and PROMPT_VERSION in rec.model_version
    assert rec.api_requests == 4 and rec.prompt_tokens > 0 and rec.cost_usd > 0
    # released caption.json keys and allowed values
    cj = caption_json(rec)
    assert tuple(cj) == CAPTION_KEYS and cj["LLM"] == "standin-llm"
    assert cj["CategoryTag"]["weather"] in VOCAB["weather"] and cj["CategoryTag"]["sceneType"]["first"] == "Urban"
    assert record_fields_from_caption_json(cj)["opt_cam_motion"] == rec.opt_cam_motion


def test_a_caption_that_keeps_contradicting_is_flagged(tmp_path: Path) -> None:
    ann = annotated_clip(tmp_path, "c", "left")
    geometry_only = {k: CONTRADICTING[k] for k in ("OptCamMotion", "MotionTrends")}
    with StandInServer(default=lambda s: Reply(content=json.dumps(geometry_only))) as srv:
        cap = Captioner(CaptionConfig(llm_base_url=srv.base_url, llm_model="m", backoff_s=0.01, geometry_retries=2))
        rec = cap.caption(ann)
        cap.close()
        prompts = [s.body["messages"][0]["content"] for s in srv.seen]
    assert len(prompts) == 3 and rec.geometry_regenerations == 2
    assert rec.geometry_check_passed is False and "says right, measured left" in rec.geometry_check_detail
    # without a vision endpoint only the motion is asked for: no scene fields invented
    assert "do not describe the scene" in prompts[0] and "SceneSummary" not in prompts[0]
    assert rec.caption_mode == "llm" and rec.refine_generated and not rec.vision_generated and not rec.tags_generated
    assert rec.scene_summary == "" and rec.shot_immersion == "" and rec.scene_tags == []


def test_out_of_vocabulary_tags_are_retried_never_stored(tmp_path: Path, sample_videos: dict[str, Path]) -> None:
    ann = annotated_clip(tmp_path, "c", "left")
    bad_tags = dict(TAGS, lighting="Purple")

    def models(seen: Seen) -> Reply:
        reply = scripted_models(seen)
        text = str(seen.body["messages"][0]["content"])
        if "classify the scene" in text and len(seen.body["messages"]) == 1:
            return Reply(content=json.dumps(bad_tags))  # first ask: out of vocabulary
        return reply

    with StandInServer(default=models) as srv:
        cfg = CaptionConfig(vlm_base_url=srv.base_url, vlm_model="v", llm_base_url=srv.base_url, llm_model="l",
                            backoff_s=0.01)
        cap = Captioner(cfg, clip_resolver=lambda cid: ClipRef(str(sample_videos["walk"]), 0, 48, 24.0))
        rec = cap.caption(ann)
        cap.close()
        reask = [s for s in srv.seen if len(s.body["messages"]) == 3]
    assert rec.lighting == "Bright"
    assert len(reask) == 1 and "lighting 'Purple' is not one of Bright, Dim/Dark, Unknown" in reask[0].body["messages"][2]["content"]
