"""The three caption steps of the paper (SPEC.md §5), each a call to a chat model.

1. **Vision** (VLM, frames at about 1 fps, 640x360): ``CamMotion`` (50-100 words) and
   ``SceneDesc`` (about 100 words).
2. **Refine** (LLM, temperature 0.1): given the step-1 text, the camera positions of
   every 5th pose and distLevel as motion intensity: ``OptCamMotion``,
   ``SceneSummary``, ``MotionTrends``, ``SceneTags``, ``ShotImmersion``. Without a
   scene description (no vision endpoint) a geometry-only prompt asks for
   ``OptCamMotion`` and ``MotionTrends`` alone: nothing is asked to describe frames
   that no model saw.
3. **Tags** (LLM): ``CategoryTag`` from ``SceneDesc``, values from the released
   vocabulary; an out-of-vocabulary value is mapped onto it when the mapping is
   unambiguous (:func:`repair_tags`), otherwise the model is asked again; it is never
   stored.

The geometry check (``check.py``) runs on ``OptCamMotion``; a contradiction is
answered by regenerating with the measured instructions in the prompt.

Prompts are files in ``prompts/``; :data:`PROMPT_VERSION` (their version number and a
hash of their text) goes into every caption record.
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .check import GeometryCheck, check_directions
from .client import ChatClient, Usage

__all__ = [
    "PROMPT_VERSION", "VOCAB", "load_prompt", "VisionAnswer", "RefineAnswer", "GeometryRefineAnswer", "TagAnswer",
    "repair_tags", "camera_positions", "format_positions", "format_instructions", "sample_frames",
    "frames_to_data_urls", "vision_step", "refine_step", "tag_step", "RefineResult",
]

PROMPTS = Path(__file__).with_name("prompts")


@lru_cache(maxsize=None)
def _prompt_text(name: str) -> str:
    return (PROMPTS / f"{name}.md").read_text(encoding="utf-8")


def load_prompt(name: str) -> string.Template:
    """The prompt file ``prompts/{name}.md`` as a ``$placeholder`` template."""
    return string.Template(_prompt_text(name))


def _prompt_version() -> str:
    version = (PROMPTS / "VERSION").read_text().strip()
    digest = hashlib.sha1()
    for f in sorted(PROMPTS.glob("*.md")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"prompts-v{version}-{digest.hexdigest()[:8]}"


#: The prompt set's version: the number in prompts/VERSION and a hash of the files, so
#: an edited prompt can never masquerade as the old one.
PROMPT_VERSION = _prompt_version()

# --------------------------------------------------------------------------- vocabulary
VOCAB: dict[str, tuple[str, ...]] = {
    "first": ("Urban", "Natural Landscape", "Interior", "Rural", "Waterfront", "Unknown"),
    "lighting": ("Bright", "Dim/Dark", "Unknown"),
    "timeOfDay": ("Dawn/Morning", "Daytime", "Dusk/Evening", "Night", "Unknown"),
    "weather": ("Sunny", "Rainy", "Foggy", "Cloudy", "Snowy", "Unknown"),
    "crowdDensity": ("Deserted", "Sparse", "Moderate", "Crowded", "Unknown"),
}
# Unambiguous out-of-vocabulary answers and the released value they mean.
_SYNONYMS: dict[str, dict[str, str]] = {
    "first": {"city": "Urban", "street": "Urban", "town": "Urban", "downtown": "Urban", "urban area": "Urban",
              "nature": "Natural Landscape", "natural": "Natural Landscape", "landscape": "Natural Landscape",
              "forest": "Natural Landscape", "mountain": "Natural Landscape", "mountains": "Natural Landscape",
              "desert": "Natural Landscape", "indoor": "Interior", "indoors": "Interior", "inside": "Interior",
              "room": "Interior", "countryside": "Rural", "village": "Rural", "farm": "Rural",
              "beach": "Waterfront", "coast": "Waterfront", "harbor": "Waterfront", "harbour": "Waterfront",
              "lake": "Waterfront", "river": "Waterfront", "sea": "Waterfront", "seaside": "Waterfront"},
    "lighting": {"bright light": "Bright", "well lit": "Bright", "well-lit": "Bright", "sunlit": "Bright",
                 "daylight": "Bright", "dim": "Dim/Dark", "dark": "Dim/Dark", "low light": "Dim/Dark",
                 "dimly lit": "Dim/Dark", "dim or dark": "Dim/Dark"},
    "timeOfDay": {"dawn": "Dawn/Morning", "morning": "Dawn/Morning", "sunrise": "Dawn/Morning",
                  "day": "Daytime", "daylight": "Daytime", "day time": "Daytime", "afternoon": "Daytime",
                  "noon": "Daytime", "midday": "Daytime", "dusk": "Dusk/Evening", "evening": "Dusk/Evening",
                  "sunset": "Dusk/Evening", "twilight": "Dusk/Evening", "nighttime": "Night", "night time": "Night"},
    "weather": {"sun": "Sunny", "clear": "Sunny", "clear sky": "Sunny", "rain": "Rainy", "raining": "Rainy",
                "fog": "Foggy", "mist": "Foggy", "misty": "Foggy", "hazy": "Foggy", "overcast": "Cloudy",
                "clouds": "Cloudy", "cloud": "Cloudy", "snow": "Snowy", "snowing": "Snowy"},
    "crowdDensity": {"empty": "Deserted", "none": "Deserted", "no people": "Deserted", "few": "Sparse",
                     "light": "Sparse", "low": "Sparse", "medium": "Moderate", "some": "Moderate",
                     "busy": "Crowded", "dense": "Crowded", "high": "Crowded", "packed": "Crowded", "heavy": "Crowded"},
}
_UNKNOWN_WORDS = {"unknown", "n/a", "na", "none given", "unclear", "not specified", "unspecified", ""}


def _repair_value(name: str, value: Any) -> tuple[str, bool]:
    """(released value, whether it was repaired); ValueError when it cannot be mapped."""
    allowed = VOCAB[name]
    text = str(value if value is not None else "").strip().strip(".")
    if text in allowed:
        return text, False
    low = re.sub(r"\s+", " ", text.lower())
    for v in allowed:
        if low == v.lower() or low.replace(" ", "") == v.lower().replace(" ", ""):
            return v, True
    if low in _UNKNOWN_WORDS:
        return "Unknown", True
    if low in _SYNONYMS[name]:
        return _SYNONYMS[name][low], True
    parts = [p.strip() for p in re.split(r"[/,]| or ", low) if p.strip()]
    hits = {v for p in parts for v in allowed if p == v.lower() or p in [s.lower() for s in v.split("/")]}
    hits |= {_SYNONYMS[name][p] for p in parts if p in _SYNONYMS[name]}
    if len(hits) == 1:
        return hits.pop(), True
    raise ValueError(f"{name} {text!r} is not one of {', '.join(allowed)}")


def repair_tags(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The released ``CategoryTag`` dict from a model's answer, and the repairs made.

    Accepts the released nesting (``sceneType.first``) and flat spellings
    (``sceneTypeFirst``, ``scene_type_first``). Raises ValueError naming every value
    that is outside the vocabulary and cannot be mapped onto it unambiguously."""
    flat: dict[str, Any] = {}
    src = obj.get("CategoryTag", obj) if isinstance(obj.get("CategoryTag"), dict) else obj
    st = src.get("sceneType")
    if isinstance(st, dict):
        flat["first"], flat["second"] = st.get("first"), st.get("second", "")
    elif isinstance(st, str):
        flat["first"] = st
    norm = {re.sub(r"[^a-z]", "", k.lower()): v for k, v in src.items()}
    flat.setdefault("first", norm.get("scenetypefirst", norm.get("primaryscenetype")))
    flat.setdefault("second", norm.get("scenetypesecond", norm.get("secondaryscenetype", "")))
    for name in ("lighting", "timeOfDay", "weather", "crowdDensity"):
        flat[name] = src.get(name, norm.get(name.lower()))
    out: dict[str, Any] = {}
    repaired: list[str] = []
    errors: list[str] = []
    for name in ("first", "lighting", "timeOfDay", "weather", "crowdDensity"):
        if flat.get(name) is None:
            errors.append(f"{name} is missing")
            continue
        try:
            value, fixed = _repair_value(name, flat[name])
        except ValueError as exc:
            errors.append(str(exc))
            continue
        out[name] = value
        if fixed:
            repaired.append(f"{name}: {str(flat[name])[:40]!r} -> {value!r}")
    if errors:
        raise ValueError("; ".join(errors))
    second = flat.get("second")
    return {"sceneType": {"first": out["first"], "second": str(second or "").strip()[:120]},
            "lighting": out["lighting"], "timeOfDay": out["timeOfDay"], "weather": out["weather"],
            "crowdDensity": out["crowdDensity"]}, repaired


# --------------------------------------------------------------------------- answer models
def _text(v: Any) -> str:
    if isinstance(v, list):
        v = " ".join(str(x) for x in v)
    return re.sub(r"\s+", " ", str(v if v is not None else "")).strip()


def _words(v: Any, name: str) -> str:
    """Normalised text that must hold at least one word (a lone "," is an empty answer)."""
    text = _text(v)
    if not re.search(r"[^\W\d_]", text):
        raise ValueError(f"{name} holds no words: {text[:40]!r}")
    return text


def _phrases(v: Any, limit: int) -> list[str]:
    if isinstance(v, str):
        v = [p for p in re.split(r"[,;\n]", v)]
    if not isinstance(v, list):
        raise ValueError("expected a list of short phrases")
    out = []
    for p in v:
        p = _text(p).strip(" .\"'")
        if re.search(r"[^\W\d_]", p) and p.lower() not in (q.lower() for q in out):
            out.append(p[:80])
    return out[:limit]


# Normalised prose holding at least one word, and deduplicated short phrases (at most n).
_Prose = Annotated[str, BeforeValidator(lambda v, info: _words(v, str(info.field_name))), Field(min_length=1)]


def _Phrases(limit: int) -> Any:
    return Annotated[list[str], BeforeValidator(lambda v: _phrases(v, limit)), Field(min_length=1)]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VisionAnswer(_Answer):
    """Step 1: what the vision-language model saw."""

    CamMotion: _Prose
    SceneDesc: _Prose


class GeometryRefineAnswer(_Answer):
    """Step 2 without a scene description: motion only."""

    OptCamMotion: _Prose
    MotionTrends: _Phrases(3)  # type: ignore[valid-type]


class RefineAnswer(GeometryRefineAnswer):
    """Step 2: the corrected camera motion and the scene summaries."""

    SceneSummary: _Prose
    SceneTags: _Phrases(4)  # type: ignore[valid-type]
    ShotImmersion: _Prose


@dataclass(frozen=True)
class TagAnswer:
    """Step 3: the released CategoryTag and the repairs that made it valid."""

    category: dict[str, Any]
    repaired: tuple[str, ...] = ()


def _str_schema(max_len: int) -> dict[str, Any]:
    # Prose that starts with a letter, bounded: grammar-constrained servers (llama.cpp,
    # vLLM) then cannot emit punctuation soup or loop past the token budget.
    return {"type": "string", "pattern": f"^[A-Za-z][A-Za-z0-9 ,.;:'()/!?-]{{2,{max_len}}}$"}


def _list_schema(max_items: int) -> dict[str, Any]:
    item = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9 /'-]{1,40}$"}
    return {"type": "array", "items": item, "minItems": 1, "maxItems": max_items}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# maxLength keeps a looping small model inside the token budget (grammar-constrained servers).
VISION_SCHEMA = _object({"CamMotion": _str_schema(900), "SceneDesc": _str_schema(1200)})
GEOMETRY_REFINE_SCHEMA = _object({"OptCamMotion": _str_schema(700), "MotionTrends": _list_schema(3)})
REFINE_SCHEMA = _object({"OptCamMotion": _str_schema(900), "SceneSummary": _str_schema(400),
                         "MotionTrends": _list_schema(3), "SceneTags": _list_schema(4),
                         "ShotImmersion": _str_schema(900)})
TAG_SCHEMA = _object({
    "sceneType": _object({"first": {"type": "string", "enum": list(VOCAB["first"])}, "second": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9 /&'-]{1,40}$"}}),
    **{k: {"type": "string", "enum": list(VOCAB[k])} for k in ("lighting", "timeOfDay", "weather", "crowdDensity")},
})


# --------------------------------------------------------------------------- geometry inputs
def camera_positions(poses_w2c: ArrayLike, stride: int = 5) -> NDArray[np.float64]:
    """Camera centres of every ``stride``-th pose, ``(K, 3)``, in the first camera's frame
    (x right, y down, z forward), so the prompt's direction rules hold whatever world
    frame the pose backend chose. (The reference passed raw world coordinates.)"""
    from spatialvid.processors.geometry.poses import camera_centers, quat_normalize, quat_rotate

    poses = np.asarray(poses_w2c, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 7 or poses.shape[0] == 0:
        raise ValueError(f"poses: expected (N, 7) w2c rows, got {poses.shape}")
    centers = camera_centers(poses)[:: max(1, stride)]
    q0 = quat_normalize(poses[0, 3:7])
    return quat_rotate(np.broadcast_to(q0, (len(centers), 4)), centers - centers[0])


def format_positions(positions: ArrayLike, scale: int = 1000) -> str:
    """Three lines ``x: ...``, ``y: ...``, ``z: ...`` of integers, the largest absolute
    coordinate scaled to ``scale`` (the reference's integer format, readable by a model)."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    peak = float(np.abs(p).max()) if p.size else 0.0
    q = np.zeros_like(p, dtype=np.int64) if peak < 1e-12 else np.round(p / peak * scale).astype(np.int64)
    return "\n".join(f"{axis}: " + " ".join(str(v) for v in q[:, i]) for i, axis in enumerate("xyz"))


def format_instructions(instructions: dict[str, list[str]] | None, instruction_steps: dict[str, int]) -> str:
    """The measured motion for the regeneration prompt: ordered ranges if known, else
    the pose steps per command."""
    if instructions:
        from .offline import segments

        segs = segments(instructions)
        return "; then ".join(", ".join(cmds) for _, _, cmds in segs) or "Stay"
    ranked = sorted(instruction_steps.items(), key=lambda t: -t[1])
    return ", ".join(f"{c} ({n} steps)" for c, n in ranked) or "Stay"


# --------------------------------------------------------------------------- frames
def sample_frames(uri: str, frame_start: int, frame_end: int, fps: float, *, target_fps: float = 1.0,
                  width: int = 640, height: int = 360, max_frames: int = 16) -> list[NDArray[np.uint8]]:
    """RGB frames of clip ``[frame_start, frame_end)`` at about ``target_fps``, resized to
    ``width`` x ``height`` (SPEC.md §5: about 1 fps at 640x360), at most ``max_frames``."""
    from spatialvid.processors.frames import iter_frames, to_rgb

    n = max(0, frame_end - frame_start)
    if n == 0:
        raise ValueError(f"empty clip [{frame_start}, {frame_end})")
    k = int(min(max_frames, max(1, round(n / max(fps, 1e-6) * target_fps))))
    wanted = set(np.linspace(frame_start, frame_end - 1, k).round().astype(int).tolist())
    out = [to_rgb(f, width, height) for idx, f in iter_frames(uri, frame_start, frame_end) if idx in wanted]
    if not out:
        raise ValueError(f"{uri}: no frame decoded in [{frame_start}, {frame_end})")
    return out


def frames_to_data_urls(frames: list[NDArray[np.uint8]], quality: int = 85) -> list[str]:
    """JPEG data URLs (``data:image/jpeg;base64,...``), as chat ``image_url`` parts take them."""
    import cv2

    urls = []
    for rgb in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("JPEG encoding failed")
        urls.append("data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii"))
    return urls


# --------------------------------------------------------------------------- the steps
@dataclass(frozen=True)
class StepOptions:
    """Sampling options of one step."""

    temperature: float = 0.1
    max_tokens: int = 1024
    seed: int | None = None
    answer_retries: int = 2


def vision_step(client: ChatClient, image_urls: list[str], usage: Usage, opts: StepOptions) -> VisionAnswer:
    """Step 1: frames (data URLs) -> CamMotion and SceneDesc."""
    content: list[dict[str, Any]] = [{"type": "text", "text": _prompt_text("vision")}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    messages = [{"role": "user", "content": content}]
    return client.chat_json(messages, VISION_SCHEMA, VisionAnswer.model_validate, usage, name="vision",
                            temperature=opts.temperature, max_tokens=opts.max_tokens, seed=opts.seed,
                            answer_retries=opts.answer_retries)


@dataclass
class RefineResult:
    """Step 2's answer and its geometry check."""

    answer: GeometryRefineAnswer
    check: GeometryCheck
    regenerations: int = 0
    checks: list[GeometryCheck] = field(default_factory=list)


def refine_step(client: ChatClient, *, cam_motion: str, scene_desc: str, positions: str, dist_level: int | None,
                instruction_steps: dict[str, int], instructions: dict[str, list[str]] | None, num_steps: int,
                usage: Usage, opts: StepOptions, pose_stride: int = 5, geometry_retries: int = 2) -> RefineResult:
    """Step 2, with the geometry check: a caption whose directions contradict the
    instructions is regenerated with the measured instructions in the prompt, up to
    ``geometry_retries`` times; the last answer and its check are returned."""
    with_scene = bool(scene_desc.strip())
    template = load_prompt("refine" if with_scene else "refine_geometry")
    schema = REFINE_SCHEMA if with_scene else GEOMETRY_REFINE_SCHEMA
    validate: Callable[[dict[str, Any]], GeometryRefineAnswer] = (
        RefineAnswer.model_validate if with_scene else GeometryRefineAnswer.model_validate)
    hint = ""
    checks: list[GeometryCheck] = []
    for attempt in range(geometry_retries + 1):
        prompt = template.substitute(cam_motion=cam_motion or "(none)", scene_desc=scene_desc or "(none)",
                                     positions=positions, pose_stride=pose_stride,
                                     dist_level="unknown" if dist_level is None else dist_level,
                                     instructions_hint=hint)
        seed = None if opts.seed is None else opts.seed + 101 * attempt
        answer = client.chat_json([{"role": "user", "content": prompt}], schema, validate, usage, name="refine",
                                  temperature=opts.temperature, max_tokens=opts.max_tokens, seed=seed,
                                  answer_retries=opts.answer_retries)
        check = check_directions(answer.OptCamMotion, instruction_steps, num_steps)
        checks.append(check)
        if check.passed:
            break
        hint = load_prompt("instructions_hint").substitute(
            instructions=format_instructions(instructions, instruction_steps),
            contradictions="; ".join(check.contradictions))
    return RefineResult(answer=answer, check=checks[-1], regenerations=len(checks) - 1, checks=checks)


def tag_step(client: ChatClient, scene_desc: str, usage: Usage, opts: StepOptions) -> TagAnswer:
    """Step 3: SceneDesc -> CategoryTag, repaired onto the vocabulary or asked again."""
    prompt = load_prompt("tags").substitute(scene_desc=scene_desc)

    def validate(obj: dict[str, Any]) -> TagAnswer:
        category, repaired = repair_tags(obj)
        return TagAnswer(category=category, repaired=tuple(repaired))

    return client.chat_json([{"role": "user", "content": prompt}], TAG_SCHEMA, validate, usage, name="tags",
                            temperature=opts.temperature, max_tokens=min(opts.max_tokens, 256), seed=opts.seed,
                            answer_retries=opts.answer_retries)
