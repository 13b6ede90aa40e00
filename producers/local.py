"""The local producer: video files from folders, file lists and URL lists.

Inputs may be mixed: a folder (searched recursively for video files), a file, a
``@list.txt`` of paths or URLs (one per line, ``#`` comments), or an ``http(s)://`` /
``file://`` URL, which is downloaded into the artifact store (atomically, once).
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from spatialvid.config import Config

from .base import Candidate, VideoProducer
from .probe import UnreadableVideo

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


def _is_url(s: str) -> bool:
    return s.split(":", 1)[0].lower() in ("http", "https", "file") and "://" in s


class LocalProducer(VideoProducer):
    """Emits the videos named by paths, ``@lists`` and URLs."""

    name = "local"
    source_kind = "local"

    def __init__(self, cfg: Config, inputs: Sequence[str]) -> None:
        super().__init__(cfg)
        self.inputs = list(inputs)

    def _expand(self, item: str) -> Iterator[str]:
        if item.startswith("@"):
            for line in Path(item[1:]).read_text(encoding="utf-8", errors="surrogateescape").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    yield from self._expand(line)
        elif _is_url(item):
            yield item
        else:
            p = Path(item)
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES:
                        yield str(f)
            else:
                yield str(p)  # a missing or bad file still gets its dead letter

    def candidates(self) -> Iterator[Candidate]:
        seen: set[str] = set()
        for item in self.inputs:
            for ref in self._expand(item):
                ref = ref if _is_url(ref) else os.path.abspath(ref)
                if ref in seen:
                    continue
                seen.add(ref)
                name = ref.rstrip("/").rsplit("/", 1)[-1]
                name = urllib.parse.unquote(name) if _is_url(ref) else name  # "%20" in a file name is literal
                yield Candidate(ref=ref, title=Path(name).stem)

    def fetch(self, cand: Candidate) -> Path:
        if not _is_url(cand.ref):
            try:
                cand.ref.encode("utf-8")
            except UnicodeEncodeError:
                raise UnreadableVideo("file name is not valid UTF-8; rename the file") from None
            return Path(cand.ref)
        # Downloads land in the store under the video id: the same URL is fetched once.
        suffix = Path(urllib.parse.urlparse(cand.ref).path).suffix.lower()
        suffix = suffix if suffix in VIDEO_SUFFIXES else ".mp4"
        dest = self.cfg.artifacts_dir / "sources" / f"{cand.video_id}{suffix}"
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + f".part-{os.getpid()}")
        try:
            with urllib.request.urlopen(cand.ref, timeout=60) as resp, tmp.open("wb") as fh:
                shutil.copyfileobj(resp, fh, 1 << 20)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UnreadableVideo(f"download of {cand.ref} failed: {exc}") from exc
        return dest
