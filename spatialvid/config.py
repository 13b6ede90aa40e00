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
    """ClickHouse sink batching: flush when either bound is reached."""

    batch_rows: int = 50000
    batch_wait_s: float = 0.5


@dataclass
class SplitConfig:
    """The simple fixed-window splitter (SPEC.md §1 bounds: clips of 3 s to 15 s)."""

    window_s: float = 10.0
    min_clip_s: float = 3.0
    max_clip_s: float = 15.0


@dataclass
class ScoringConfig:
    """Frame sampling for the per-clip scores (SPEC.md §2)."""

    sample_width: int = 640
    sample_height: int = 360
    decode_threads: int = 0  # 0: let FFmpeg choose


@dataclass
class FilterConfig:
    """Keep-thresholds of the four quality filters (SPEC.md §2)."""

    aesthetic_min: float = 4.0
    luminance_min: float = 20.0
    luminance_max: float = 140.0
    ocr_max: float = 0.3
    motion_min: float = 2.0
    motion_max: float = 14.0


@dataclass
class Config:
    """The whole configuration."""

    data_dir: str = "spatialvid-data"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)

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
