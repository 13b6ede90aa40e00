"""One configuration for the whole pipeline: a TOML file plus environment variables.

Defaults are the paper's values (../shared/SPEC.md); every threshold lives here and
nowhere else. Precedence: defaults < config file < environment variables.

Environment variables are named ``SPATIALVID_<SECTION>__<KEY>``, for example
``SPATIALVID_KAFKA__BOOTSTRAP=broker:9092`` or ``SPATIALVID_FILTERS__MOTION_MIN=1.5``.
The config file is ``--config PATH``, else ``$SPATIALVID_CONFIG``, else
``./spatialvid.toml`` when it exists.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "SPATIALVID_"


@dataclass
class KafkaConfig:
    """Kafka transport. An empty ``bootstrap`` starts the embedded broker (tansu)."""

    bootstrap: str = ""
    topic_prefix: str = "spatialvid."
    partitions: int = 4
    # librdkafka's first group join takes about half of this; a few seconds keeps
    # restarts after a crash quick without flapping on a busy machine.
    session_timeout_ms: int = 10000
    fetch_wait_max_ms: int = 20


@dataclass
class WarehouseConfig:
    """ClickHouse. An empty ``url`` means embedded chDB at ``path``; else HTTP(S)."""

    url: str = ""
    path: str = ""  # default: <data_dir>/warehouse
    database: str = "spatialvid"


@dataclass
class RuntimeConfig:
    """Stage runtime: micro-batches and retries."""

    batch_size: int = 8
    batch_wait_s: float = 0.5
    max_retries: int = 2
    retry_backoff_s: float = 0.5


@dataclass
class SinkConfig:
    """ClickHouse sink batching: flush when either bound is reached.

    ``merge_every_s``: how often the owner of an embedded warehouse merges the per-clip
    latest-state table (``clip_latest``), which the dashboard, statistics and HQ read
    fast only when merged (a ClickHouse server merges in the background by itself).
    """

    batch_rows: int = 50000
    batch_wait_s: float = 0.5
    merge_every_s: float = 300.0


@dataclass
class SplitConfig:
    """Videos -> clips (SPEC.md §1): scene cuts, 0.3 s trims, clips of 3 s to 15 s.

    ``method``: ``scenes`` (content + adaptive detectors with the interval-based fade and
    dissolve fix, ``processors/scenes.py``) or ``fixed`` (consecutive ``window_s`` windows).
    ``materialize``: also cut and re-encode every clip into the artifact store with the
    ``[transcode]`` settings; off by default, because scoring reads the frame range of
    the source directly and re-encoding is the most expensive CPU step here.
    """

    method: str = "scenes"
    window_s: float = 10.0
    min_clip_s: float = 3.0
    max_clip_s: float = 15.0
    trim_s: float = 0.3
    content_threshold: float = 21.0
    adaptive_threshold: float = 3.0
    min_scene_len: int = 15  # frames
    frame_skip: int = 2
    materialize: bool = False


@dataclass
class TranscodeConfig:
    """The uniform clip format (SPEC.md §1: H.265 in MP4; 720p as in the released data).

    ``encoder``: ``auto`` takes the GPU encoder (``hevc_nvenc`` / ``h264_nvenc``) when it
    opens, else the software one (``libx265`` / ``libx264``); or name an FFmpeg encoder.
    ``fit``: ``crop`` (scale to cover, centre crop), ``pad`` (letterbox) or ``stretch``.
    """

    codec: str = "hevc"
    encoder: str = "auto"
    width: int = 1280
    height: int = 720
    fit: str = "crop"
    crf: int = 28
    preset: str = "fast"


@dataclass
class CrawlConfig:
    """The crawl producer (yt-dlp). Lists are comma-separated. SPEC.md §1.

    The pre-filter runs on metadata before any download; a field the site does not
    report is checked again on the downloaded file. ``pace_s`` is the least time between
    two requests to a site; ``retries`` with exponential backoff from ``backoff_s``.
    """

    queries: str = "walk,tour,drone"
    results_per_query: int = 20
    search_prefix: str = "ytsearch"
    title_allow: str = ""  # when set, a title must contain one of these
    title_deny: str = "compilation,slideshow,lyrics,reaction,gameplay,trailer,timelapse,time-lapse,montage,podcast"
    min_duration_s: float = 30.0
    max_duration_s: float = 7200.0
    min_short_side: int = 720
    min_aspect: float = 1.3
    max_aspect: float = 2.5
    exclude_live: bool = True
    exclude_shorts: bool = True
    format: str = "bv*[height<=1080][ext=mp4]/bv*[height<=1080]/b[height<=1080]/bv*/b"
    pace_s: float = 2.0
    retries: int = 3
    backoff_s: float = 5.0
    socket_timeout_s: float = 30.0
    rate_limit_bps: int = 0  # 0: unlimited
    enable_file_urls: bool = False


@dataclass
class ScoringConfig:
    """Frame sampling for the per-clip scores (SPEC.md §2)."""

    sample_width: int = 640
    sample_height: int = 360
    # FFmpeg threads per decoder. 0: with decode_processes, the cores shared out among the
    # processes (one each with a process per core: FFmpeg's own threads on top cost
    # 1.3-1.7x on 16 cores, bench_models.py); on decode threads, FFmpeg's choice.
    decode_threads: int = 0
    # Model backends, by registry name (`spatialvid models` lists them). "auto": the
    # paper's LAION model when its weights are in weights_dir, else the labelled BRISQUE
    # proxy (its rows say so). "none" skips a filter (its columns stay NULL).
    aesthetic_backend: str = "auto"
    # OCR: "rapidocr-ppocrv6-det" (offline, in its wheel) or "paddleocr-det" (your PaddleOCR 3.x on the
    # PP-OCR detector folder <weights_dir>/paddleocr-det; processors/scorers/ocr_paddle.py).
    ocr_backend: str = "rapidocr-ppocrv6-det"
    weights_dir: str = ""  # default: ~/.cache/spatialvid/models
    device: str = "auto"  # auto: cuda when torch sees one, else cpu
    half: bool = True  # fp16 for the CLIP tower on CUDA
    model_batch: int = 32  # frames per forward pass
    decode_workers: int = 2  # clips decoded at once (each decoder is threaded too)
    decode_processes: bool = False  # decode in worker processes, not threads (no GIL contention; many-core GPU hosts)
    ocr_threads: int = 2  # onnxruntime threads of the text detector


@dataclass
class FilterConfig:
    """Keep-thresholds of the four quality filters (SPEC.md §2)."""

    aesthetic_min: float = 4.0
    luminance_min: float = 20.0
    luminance_max: float = 140.0
    ocr_max: float = 0.3
    motion_min: float = 2.0
    motion_max: float = 14.0
    # Not the paper's: keep-threshold of the offline aesthetic proxy (BRISQUE, lower is
    # better), used only when aesthetic_backend resolves to brisque-proxy.
    brisque_max: float = 60.0


@dataclass
class HQConfig:
    """The HQ subset (SPEC.md §6): raised quality thresholds, then balanced sampling.

    The paper raises "the thresholds of the key quality metrics" without publishing
    them; these defaults are stricter than ``[filters]`` in that spirit. A score that is
    NULL (its filter did not run in this configuration) excludes a clip only when
    ``allow_unscored`` is false. ``balance``: comma-separated attributes whose value
    distributions are evened out (scene_type, time_of_day, weather, crowd_density,
    lighting, motion_trend, traj_turns, dist_level).
    """

    hours: float = 1146.0  # the paper's HQ subset: about 1,146 of 7,089 hours
    seed: int = 0
    name: str = "hq"
    aesthetic_min: float = 4.5
    luminance_min: float = 30.0
    luminance_max: float = 120.0
    ocr_max: float = 0.1
    motion_min: float = 3.0
    motion_max: float = 12.0
    allow_unscored: bool = True
    require_annotation: bool = True
    drop_anomalies: bool = True
    balance: str = "scene_type,time_of_day,weather,crowd_density,lighting,motion_trend,traj_turns,dist_level"


@dataclass
class DashboardConfig:
    """The live dashboard (``spatialvid dashboard``, ``spatialvid run --dashboard PORT``)."""

    host: str = "127.0.0.1"
    port: int = 8765
    refresh_s: float = 2.0
    window_minutes: int = 60  # how far back the time series reach


@dataclass
class CaptionConfig:
    """Captions and tags over OpenAI-compatible chat APIs (SPEC.md §5), per step.

    Steps: ``vlm`` (frames -> CamMotion, SceneDesc), ``llm`` (text + camera positions ->
    OptCamMotion, SceneSummary, MotionTrends, SceneTags, ShotImmersion, temperature
    0.1 as in the paper) and ``tag`` (SceneDesc -> CategoryTag; empty base URL and model:
    the ``llm`` endpoint). Model names default to the reference's (gemini-2.0-flash,
    qwen3-30b-a3b). With no ``llm_base_url`` the stage writes the deterministic offline
    geometry caption and leaves the scene fields empty, marked as not generated.
    API keys are read from the environment variables *named* here, never stored.
    """

    vlm_base_url: str = ""
    vlm_model: str = "gemini-2.0-flash"
    vlm_api_key_env: str = ""
    vlm_temperature: float = 0.1
    llm_base_url: str = ""
    llm_model: str = "qwen3-30b-a3b"
    llm_api_key_env: str = ""
    llm_temperature: float = 0.1
    tag_base_url: str = ""
    tag_model: str = ""
    tag_api_key_env: str = ""
    tag_temperature: float = 0.1
    # USD per million tokens (input, output) for the cost columns; 0: not priced.
    vlm_price_in: float = 0.0
    vlm_price_out: float = 0.0
    llm_price_in: float = 0.0
    llm_price_out: float = 0.0
    structured_output: str = "json_schema"  # json_schema | json_object | none (auto-downgrades on 400)
    seed: int = -1  # -1: not sent
    max_tokens: int = 1024
    concurrency: int = 4  # requests in flight per endpoint, and clips in flight per worker
    timeout_s: float = 120.0
    max_retries: int = 4  # HTTP retries on 429, 5xx, timeouts, connection errors
    backoff_s: float = 1.0  # first wait; doubles per retry, capped at max_backoff_s
    max_backoff_s: float = 30.0
    answer_retries: int = 2  # re-asks on malformed JSON, empty answers, refusals, bad tags
    geometry_retries: int = 2  # regenerations when OptCamMotion contradicts the instructions
    frame_fps: float = 1.0  # SPEC.md §5: about 1 fps at 640x360
    frame_width: int = 640
    frame_height: int = 360
    max_frames: int = 16
    jpeg_quality: int = 85
    pose_stride: int = 5  # camera positions of every 5th pose go into the prompt
    write_caption_json: bool = True  # caption.json beside the clip's annotation artifacts


@dataclass
class AnnotateConfig:
    """Geometric annotation of the clips that passed the filters (SPEC.md §3; issue 6).

    ``backend``: a geometry backend by name (``colmap``: pycolmap SIFT + sequential
    matching + incremental mapping, CPU, or CUDA for features and matching with the
    pycolmap-cuda12 wheel; ``colmap-default``: pycolmap's untuned pipeline, the
    benchmark baseline). Frames are sampled every ``int(fps / sample_fps)`` frames
    (SPEC.md: every int(0.2 fps)) and shrunk to at most ``max_side`` pixels.
    A clip with fewer than ``min_registered_share`` of its frames registered, or whose
    camera moves less than ``min_baseline`` of the scene depth, ends unsuccessful.
    Dynamic masks (SPEC.md §3): threshold ``min + mask_threshold (max - min)`` of the
    motion-probability map, empty when that exceeds ``max - mask_empty_margin``,
    regions over ``mask_max_area`` of the frame dropped; ``sam2_checkpoint`` +
    ``sam2_config`` refine the regions with SAM2 when the ``sam2`` package is there;
    ``person_fallback`` adds mediapipe's offline person segmentation. ``depth_model``
    (off by default) adds a depth map per annotated frame, median-aligned to the backend's
    sparse depths (``processors/geometry/depth.py``).
    """

    backend: str = "colmap"
    sample_fps: float = 5.0
    max_frames: int = 150  # cap on sampled frames per clip (a 15 s clip at 5 fps has 75)
    max_side: int = 1280
    device: str = "auto"  # auto | cpu | cuda
    threads: int = -1  # -1: all cores
    min_registered_share: float = 0.8
    max_gap: int = 2
    min_baseline: float = 0.02
    min_features: int = 300
    camera_model: str = "SIMPLE_PINHOLE"
    max_features: int = 4096
    match_overlap: int = 10
    self_calibrate: bool = True
    masks: bool = True
    mask_threshold: float = 0.4
    mask_empty_margin: float = 0.1
    mask_max_area: float = 0.3
    mask_prompts: int = 4
    mask_flow_sigma_px: float = 1.5  # residual (pixels at 640 wide) where motion probability is 0.5
    person_fallback: bool = False
    sam2_checkpoint: str = ""
    sam2_config: str = ""
    release_groups: int = 1000  # clips spread over group_0000 .. group_0999 by a hash of the id
    megasam_command: str = ""  # backend "megasam": your MegaSaM run, a command with {frames} and {out}
    # Optional monocular depth per annotated frame (SPEC.md §3 depth priors): a registry name
    # (`spatialvid models`: depth-anything-v2-vitl, unidepth-v2-vitl14, ...; "" = off) and,
    # optionally, its checkpoint file (UniDepth: its folder) instead of the weights folder.
    depth_model: str = ""
    depth_checkpoint: str = ""
    # Dense depth by plane-sweep stereo on the backend's own poses (processors/geometry/mvs.py,
    # torch on CPU or CUDA per ``device``) when the backend gives no depth and no depth_model
    # is set; invalid pixels are 0. Working resolution: longest side ``dense_depth_side``.
    # Off by default: on this 2-core CPU it costs 0.45 s per frame (one thread), a quarter of
    # the pose time at 720p and about as much as the poses on small frames, and it needs
    # torch and OpenEXR (optional extras); on a GPU machine turn it on (docs/benchmarks.md).
    dense_depth: bool = False
    dense_depth_side: int = 384


@dataclass
class Config:
    """The whole configuration."""

    data_dir: str = "spatialvid-data"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    hq: HQConfig = field(default_factory=HQConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)

    @property
    def warehouse_path(self) -> Path:
        return Path(self.warehouse.path or Path(self.data_dir) / "warehouse")

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.data_dir) / "artifacts"

    def topic(self, name: str) -> str:
        """Full Kafka topic name of a logical topic (``videos``, ``clips``, ...)."""
        return f"{self.kafka.topic_prefix}{name}"

    def to_env(self) -> dict[str, str]:
        """This configuration as ``SPATIALVID_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for sub in dataclasses.fields(value):
                    env[f"{ENV_PREFIX}{f.name.upper()}__{sub.name.upper()}"] = str(getattr(value, sub.name))
            else:
                env[f"{ENV_PREFIX}{f.name.upper()}"] = str(value)
        return env


def _coerce(kind: Any, raw: Any, where: str) -> Any:
    try:
        if kind is bool and isinstance(raw, str):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cannot read {raw!r} as {kind.__name__}") from None


class ConfigError(ValueError):
    """A configuration value is unknown or has the wrong type."""


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = get_type_hints(type(obj))
    for key, raw in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(raw, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            _apply(current, raw, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(hints[key], raw, f"{where}.{key}"))


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the configuration from defaults, an optional TOML file and the environment."""
    env = dict(os.environ if env is None else env)
    cfg = Config()
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or ("spatialvid.toml" if Path("spatialvid.toml").exists() else None)
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        with p.open("rb") as fh:
            _apply(cfg, tomllib.load(fh), str(p))
    nested: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = raw
    _apply(cfg, nested, "environment")
    return cfg
