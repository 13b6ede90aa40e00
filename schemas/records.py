"""The record types that travel on the topics: one source of truth each.

Every record is a pydantic model. From the same model come the JSON Schema
(``Model.model_json_schema()``, exported by ``spatialvid schema``) and the ClickHouse
table (``schemas.ddl``). A field's ClickHouse type is derived from its Python type,
or pinned with ``Annotated[..., CH("UInt32")]`` where the default would be wasteful.

Conventions (../shared/DESIGN.md "Contracts to keep stable"):
- every record has ``schema_version``; records are keyed by video id or clip id so one
  clip's records stay in order on one partition;
- every result record names the producing ``stage``, ``model_id`` and ``model_version``;
- ids are deterministic, so a redelivered message is recognisably the same row.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CH:
    """Pins the ClickHouse column type of a field: ``Annotated[int, CH("UInt32")]``."""

    def __init__(self, type_: str) -> None:
        self.type = type_

    def __repr__(self) -> str:
        return f"CH({self.type!r})"


UInt32 = Annotated[int, CH("UInt32")]
UInt16 = Annotated[int, CH("UInt16")]
Float32 = Annotated[float, CH("Float32")]
LowStr = Annotated[str, CH("LowCardinality(String)")]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def slug_id(name: str, identity: str, max_len: int = 24) -> str:
    """A readable, deterministic, path-safe id: ``<slug of name>-<8 hex of identity>``.

    Hostile names (quotes, newlines, separators, non-UTF-8 escapes) reduce to
    ``[A-Za-z0-9-]``, so an id can never leave the artifact store as a path.
    """
    slug = _UNSAFE.sub("-", name).strip("-")[:max_len].strip("-") or "video"
    digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slug}-{digest}"


class Record(BaseModel):
    """Base of every record on a topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: ClassVar[str]
    table: ClassVar[str]
    #: ClickHouse ORDER BY of the table: also the identity used for deduplication.
    order_by: ClassVar[tuple[str, ...]]

    schema_version: UInt16 = 1

    @property
    def key(self) -> str:
        """Kafka message key: the video id or clip id."""
        raise NotImplementedError

    def identity(self) -> tuple[Any, ...]:
        """The deduplication identity (the table's ORDER BY values)."""
        return tuple(getattr(self, c) for c in self.order_by)


class VideoRecord(Record):
    """A source video, probed (topic ``videos``, table ``videos``)."""

    topic = "videos"
    table = "videos"
    order_by = ("video_id",)

    video_id: str = Field(description="deterministic id of the source")
    uri: str = Field(description="where the video file is (local path or fsspec URL)")
    source: LowStr = Field(description="producer kind: local, crawl")
    title: str = ""
    duration_s: float
    fps: float
    width: UInt32
    height: UInt32
    num_frames: UInt32
    codec: LowStr
    rotation: Annotated[int, CH("Int16")] = 0
    size_bytes: int = 0
    query: str = Field("", description="crawl query that found it, if any")
    # -- additive (issue 3): crawl metadata and the pre-filter verdict ------------------
    source_ref: str = Field("", description="stable identity of the source: 'extractor id' or URL")
    webpage_url: str = ""
    uploader: str = ""
    upload_date: str = Field("", description="YYYYMMDD as the site reports it")
    license: str = ""
    accepted: bool = Field(True, description="false: the crawl pre-filter rejected it (nothing to split)")
    reject_reasons: list[str] = Field(default_factory=list, description="'check: detail' per failed check")
    produced_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.video_id


class ClipRecord(Record):
    """A clip of a source video (topic ``clips``, table ``clips``). End frame exclusive."""

    topic = "clips"
    table = "clips"
    order_by = ("clip_id",)

    clip_id: str = Field(description="{video_id}_{index}")
    video_id: str
    index: UInt32
    num_clips: UInt32 = Field(description="how many clips the splitter made of this video")
    uri: str = Field(description="the source video; the clip is its frames [frame_start, frame_end)")
    frame_start: UInt32
    frame_end: UInt32
    timestamp_start: float
    timestamp_end: float
    fps: float
    width: UInt32
    height: UInt32
    stage: LowStr = "split"
    method: LowStr = Field(description="splitter and version, e.g. fixed-window-v1")
    # -- additive (issue 3): the materialised clip (empty when split.materialize is off) --
    clip_uri: str = Field("", description="the re-encoded clip file (frames 0..num_frames of it)")
    clip_codec: LowStr = ""
    clip_width: UInt32 = 0
    clip_height: UInt32 = 0
    produced_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.clip_id

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start

    @property
    def duration_s(self) -> float:
        return self.timestamp_end - self.timestamp_start


class ScoreRecord(Record):
    """The quality scores of one clip (topic ``scores``, table ``clip_scores``).

    One row per clip and model version: re-scoring with a new version adds a row and
    the views read the latest. A filter that did not run has ``None`` value and verdict.
    """

    topic = "scores"
    table = "clip_scores"
    order_by = ("clip_id", "model_version")

    clip_id: str
    video_id: str
    stage: LowStr = "score"
    model_id: LowStr = Field(description="the scorer set, e.g. 'luminance+vmaf-motion'")
    model_version: LowStr = Field(description="versions of every scorer that ran, joined")
    duration_s: float = 0.0
    num_frames: UInt32 = 0
    aesthetic: float | None = Field(None, description="LAION aesthetic score (the paper's model only)")
    aesthetic_model: LowStr = ""
    aesthetic_pass: bool | None = None
    aesthetic_proxy: float | None = Field(None, description="offline proxy score (aesthetic_model names it), "
                                          "never the LAION score")
    luminance_mean: float | None = None
    luminance_min: float | None = None
    luminance_max: float | None = None
    luminance_pass: bool | None = None
    ocr_ratio: float | None = None
    ocr_model: LowStr = ""
    ocr_pass: bool | None = None
    motion: float | None = None
    motion_pass: bool | None = None
    passed: bool = Field(description="every filter that ran passed")
    reject_reasons: list[str] = Field(default_factory=list)
    # -- additive (issue 6): where the clip's frames are, so annotate needs no lookup ----
    uri: str = Field("", description="the source video; the clip is its frames [frame_start, frame_end)")
    clip_uri: str = Field("", description="the materialised clip file, when there is one")
    frame_start: UInt32 = 0
    frame_end: UInt32 = 0
    fps: float = 0.0
    scored_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.clip_id


class AnnotationRecord(Record):
    """Camera geometry of one clip (topic ``annotations``): trajectory metrics (snake_case
    of the paper's moveDist, distLevel, rotAngle, trajTurns, dynamicRatio), the motion
    instruction summary and where the release-layout artifacts are."""

    topic = "annotations"
    table = "clip_annotations"
    order_by = ("clip_id", "model_version")

    clip_id: str
    video_id: str
    stage: LowStr = "annotate"
    model_id: LowStr
    model_version: LowStr
    success: bool
    registered_share: float = 0.0
    num_poses: UInt32 = 0
    move_dist: float | None = None
    dist_level: Annotated[int | None, CH("Nullable(UInt8)")] = None
    rot_angle: float | None = None
    traj_turns: Annotated[int | None, CH("Nullable(UInt16)")] = None
    anomaly: bool | None = None
    dynamic_ratio: float | None = None
    motion_trends: list[str] = Field(default_factory=list)
    instruction_method: LowStr = "enhanced"
    instruction_steps: Annotated[dict[str, int], CH("Map(LowCardinality(String), UInt32)")] = Field(
        default_factory=dict, description="pose steps per motion command (instruction_summary)")
    artifacts_uri: str = Field("", description="annotation folder: poses.npy, instructions.json, ...")
    # -- additive (issue 6): why a clip ended unsuccessful, and what the units mean ------
    failure_reason: str = Field("", description="why success is false (no baseline, too few frames registered, ...)")
    scale_convention: LowStr = Field("", description="the backend's translation units (SPEC.md §3 'Scale')")
    num_sampled: UInt32 = Field(0, description="frames given to the backend (registered_share's denominator)")
    depth_model: LowStr = Field("", description="model (and version) of the released depth; '' when none")
    depth_alignment: LowStr = Field("", description="how that depth was scaled (aligned to the backend's "
                                    "sparse depths, or left relative / metric)")
    annotated_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.clip_id


class CaptionRecord(Record):
    """Captions and tags of one clip (topic ``captions``, table ``clip_captions``), SPEC.md §5.

    Text fields are the snake_case of the released ``caption.json`` keys (CamMotion ->
    ``cam_motion``, ...); ``spatialvid.processors.caption.export.caption_json`` writes the
    released form. ``*_generated`` say which steps a model actually ran: the offline
    default writes ``opt_cam_motion`` from the geometry and leaves the scene fields
    empty with ``vision_generated = refine_generated = tags_generated = false``.
    Word counts per text field are derived from the text on validation (statistics).
    """

    topic = "captions"
    table = "clip_captions"
    order_by = ("clip_id", "model_version")

    clip_id: str
    video_id: str
    stage: LowStr = "caption"
    model_id: LowStr
    model_version: LowStr
    prompt_version: LowStr = ""
    cam_motion: str = ""
    scene_desc: str = ""
    opt_cam_motion: str = ""
    scene_summary: str = ""
    motion_trends: list[str] = Field(default_factory=list)
    scene_tags: list[str] = Field(default_factory=list)
    shot_immersion: str = ""
    scene_type_first: LowStr = "Unknown"
    scene_type_second: str = ""
    lighting: LowStr = "Unknown"
    time_of_day: LowStr = "Unknown"
    weather: LowStr = "Unknown"
    crowd_density: LowStr = "Unknown"
    geometry_check_passed: bool | None = None
    # -- additive (issue 7): provenance, checks, accounting, statistics -----------------
    llm: LowStr = Field("", description="released key LLM: the model(s) that wrote the captions")
    caption_mode: LowStr = Field("offline", description="offline | llm | vlm+llm (which steps had an endpoint)")
    vision_generated: bool = Field(False, description="CamMotion/SceneDesc came from a vision-language model")
    refine_generated: bool = Field(False, description="OptCamMotion and the summaries came from a language model")
    tags_generated: bool = Field(False, description="CategoryTag came from a language model")
    geometry_check_detail: str = Field("", description="why the direction check failed, or what it compared")
    geometry_regenerations: UInt16 = 0
    tags_repaired: list[str] = Field(default_factory=list, description="tag values mapped onto the vocabulary")
    prompt_tokens: UInt32 = 0
    completion_tokens: UInt32 = 0
    api_requests: UInt16 = 0
    api_retries: UInt16 = 0
    api_wait_s: float = 0.0
    cost_usd: float = 0.0
    cam_motion_words: UInt32 = 0
    scene_desc_words: UInt32 = 0
    opt_cam_motion_words: UInt32 = 0
    scene_summary_words: UInt32 = 0
    shot_immersion_words: UInt32 = 0
    captioned_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _word_counts(cls, data: Any) -> Any:
        """Word counts always follow the text (a redelivered record recomputes the same)."""
        if isinstance(data, dict):
            data = dict(data)
            for name in ("cam_motion", "scene_desc", "opt_cam_motion", "scene_summary", "shot_immersion"):
                text = data.get(name) or ""
                data[f"{name}_words"] = len(text.split()) if isinstance(text, str) else 0
        return data

    @property
    def key(self) -> str:
        return self.clip_id


class DeadLetter(Record):
    """Input a stage could not process, with the reason (topic ``deadletter``)."""

    topic = "deadletter"
    table = "deadletters"
    order_by = ("stage", "dead_letter_id")

    dead_letter_id: str = Field(description="deterministic: same failure, same id")
    stage: LowStr
    error_class: LowStr
    error_message: str
    source_topic: LowStr = ""
    source_partition: Annotated[int, CH("Int32")] = -1
    source_offset: int = -1
    source_key: str = Field("", description="video or clip id of the failed input, if known")
    payload: str = Field("", description="the original message (text, or base64 if binary)")
    payload_encoding: LowStr = "utf-8"
    failed_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.source_key or self.dead_letter_id


RECORD_TYPES: tuple[type[Record], ...] = (
    VideoRecord,
    ClipRecord,
    ScoreRecord,
    AnnotationRecord,
    CaptionRecord,
    DeadLetter,
)
BY_TOPIC: dict[str, type[Record]] = {r.topic: r for r in RECORD_TYPES}


def dead_letter(
    stage: str,
    error: BaseException | str,
    payload: bytes | str | None = None,
    *,
    error_class: str | None = None,
    source_topic: str = "",
    source_partition: int = -1,
    source_offset: int = -1,
    source_key: str = "",
) -> DeadLetter:
    """Build the dead letter for a failed input; the same failure always gets the same id."""
    import base64

    if isinstance(payload, bytes):
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    else:
        text, encoding = payload or "", "utf-8"
    cls = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
    message = str(error) or cls
    identity = "\x1f".join([stage, source_topic, str(source_partition), str(source_offset), source_key, cls, text])
    return DeadLetter(
        dead_letter_id=hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:20],
        stage=stage,
        error_class=cls,
        error_message=message[:4000],
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        source_key=source_key,
        payload=text[:1_000_000],
        payload_encoding=encoding,
    )
