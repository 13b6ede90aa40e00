"""The producer interface: where videos come from.

A producer finds candidate sources, brings each one into reach as a local file
(a local producer: nothing to do; the crawl producer: pre-filter on metadata, then
download into the artifact store), probes it and emits one ``VideoRecord``. A source
that cannot be used becomes a dead letter with the reason; the run carries on.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.schemas.records import VideoRecord, dead_letter, slug_id

from .probe import VideoError, probe_video


@dataclass(frozen=True)
class Candidate:
    """A source before it is fetched: a stable reference plus what is known about it."""

    ref: str  # stable identity: absolute path, URL, or platform id
    title: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def video_id(self) -> str:
        return slug_id(self.title, self.ref)


@dataclass
class ProduceStats:
    videos: int = 0
    dead_letters: int = 0
    video_ids: list[str] = field(default_factory=list)


class VideoProducer(ABC):
    """Base of every producer. Subclasses implement :meth:`candidates` and :meth:`fetch`."""

    name: ClassVar[str]
    source_kind: ClassVar[str]

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @abstractmethod
    def candidates(self) -> Iterator[Candidate]:
        """Every source this producer would emit, before any download."""

    @abstractmethod
    def fetch(self, cand: Candidate) -> Path:
        """Make the source a local file (download, or nothing for local files)."""

    def run(self, out: RecordProducer, on_item: Callable[[], None] | None = None,
            candidates: Iterable[Candidate] | None = None) -> ProduceStats:
        """Emit a video record or a dead letter per candidate (default: all of
        :meth:`candidates`), then flush."""
        stats = ProduceStats()
        for cand in self.candidates() if candidates is None else candidates:
            try:
                path = self.fetch(cand)
                probe = probe_video(path)
            except (VideoError, OSError) as exc:
                payload = json.dumps({"ref": cand.ref, "title": cand.title, **cand.metadata}, ensure_ascii=False)
                out.send(dead_letter(f"produce-{self.name}", exc, payload.encode("utf-8", "surrogateescape"),
                                     source_key=cand.video_id))
                stats.dead_letters += 1
            else:
                out.send(VideoRecord(
                    video_id=cand.video_id, uri=str(path), source=self.source_kind,
                    title=cand.title, query=cand.metadata.get("query", ""),
                    duration_s=probe.duration_s, fps=probe.fps, width=probe.width, height=probe.height,
                    num_frames=probe.num_frames, codec=probe.codec, rotation=probe.rotation,
                    size_bytes=probe.size_bytes,
                ))
                stats.videos += 1
                stats.video_ids.append(cand.video_id)
            if on_item:
                on_item()
        out.flush()
        return stats
