"""The crawl producer: find videos with yt-dlp, pre-filter them on metadata, download the
accepted ones into the artifact store, and emit one video record per source (SPEC.md §1).

Inputs (mixed freely):

- keyword searches: ``crawl.queries`` (``walk,tour,drone``) become ``ytsearch20:walk`` ...
  (``crawl.search_prefix`` + ``crawl.results_per_query``);
- URLs of channels, playlists, feeds, pages or videos, anything a yt-dlp extractor reads;
- ``@list.txt`` files of such URLs (one per line, ``#`` comments).

For every entry, in order, nothing downloaded before its turn:

1. **Dedup.** The entry's identity (yt-dlp's archive form ``"<extractor> <id>"`` when the
   listing names them, else its URL) gives a deterministic ``video_id``. A source already
   recorded, accepted or rejected, is skipped without another request: the warehouse is
   asked (``spatialvid.warehouse.query``, which goes through the process that owns it), and
   a local ledger in the artifact store (``crawl/ledger.tsv``) covers records the sink has
   not stored yet and runs without a warehouse.
2. **Metadata** (``extract_info(download=False)``, retried with backoff, paced).
3. **Pre-filter** (:func:`prefilter`, a pure function of yt-dlp's info dict): title allow and
   deny keywords, duration range, shorter side >= 720, aspect ratio, no live streams, no
   shorts. A rejected source becomes a video record with ``accepted = false`` and its
   ``reject_reasons`` (so pass rates are one SQL query); the split stage skips it.
4. **Download** into ``<artifacts>/sources/<video_id>.<ext>``: yt-dlp writes ``.part`` files
   and resumes them (HTTP ranges) after a crash, and renames only a complete file. A check
   the site gave no metadata for (a bare file link has no size or duration) is done again on
   the probed file.
5. One :class:`VideoRecord` with the crawl metadata (query, uploader, title, upload date,
   license, page URL); failures (network, unavailable, undecodable) are dead letters of
   stage ``produce-crawl`` and the crawl carries on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from spatialvid.config import Config, CrawlConfig
from spatialvid.kafka import RecordProducer
from spatialvid.schemas.records import VideoRecord, dead_letter, slug_id

from .base import Candidate, ProduceStats, VideoProducer
from .probe import Probe, VideoError, probe_video

log = logging.getLogger(__name__)

LEDGER = "crawl/ledger.tsv"


class CrawlError(VideoError):
    """A source could not be listed, described or downloaded; the message says why."""


def split_list(value: str) -> list[str]:
    """A comma-separated config value as a list (blank items dropped)."""
    return [v.strip() for v in value.split(",") if v.strip()]


# --------------------------------------------------------------------------------------------
# The pre-filter: a pure function of yt-dlp's info dict
# --------------------------------------------------------------------------------------------


def video_size(info: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(width, height) of the best video format the site offers (None when unknown)."""
    best: tuple[int, int] | None = None
    for f in info.get("formats") or []:
        if f.get("vcodec") == "none":
            continue
        w, h = f.get("width"), f.get("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            if best is None or min(w, h) > min(best):
                best = (w, h)
    if best:
        return best
    w, h = info.get("width"), info.get("height")
    return (w if isinstance(w, int) and w > 0 else None, h if isinstance(h, int) and h > 0 else None)


def prefilter(info: Mapping[str, Any], c: CrawlConfig) -> list[str]:
    """Why a source is not worth downloading: one ``"check: detail"`` per failed check, empty
    when it passes. Unknown fields pass (they are checked again after download)."""
    reasons: list[str] = []
    title = str(info.get("title") or "")
    low = title.lower()
    deny = [k for k in split_list(c.title_deny) if k.lower() in low]
    if deny:
        reasons.append(f"title: contains {deny[0]!r}")
    allow = split_list(c.title_allow)
    if allow and not any(k.lower() in low for k in allow):
        reasons.append(f"title: contains none of {', '.join(allow)}")
    live = info.get("live_status")
    if c.exclude_live and (info.get("is_live") or live in ("is_live", "is_upcoming")):
        reasons.append(f"live: {live or 'is_live'}")
    duration = info.get("duration")
    if isinstance(duration, (int, float)) and duration > 0:
        reasons += duration_reasons(duration, c)
    w, h = video_size(info)
    url = str(info.get("webpage_url") or info.get("original_url") or info.get("url") or "")
    if c.exclude_shorts and ("/shorts/" in url or (w and h and h > w and isinstance(duration, (int, float))
                                                   and 0 < duration <= 60)):
        reasons.append("short: vertical video of a minute or less" if "/shorts/" not in url else "short: /shorts/ URL")
    reasons += size_reasons(w, h, c)
    return reasons


def size_reasons(w: int | None, h: int | None, c: CrawlConfig) -> list[str]:
    """The resolution and aspect checks (also run on the probed file)."""
    out = []
    if w and h:
        if min(w, h) < c.min_short_side:
            out.append(f"resolution: {w}x{h} is below {c.min_short_side}p")
        aspect = w / h
        if not c.min_aspect <= aspect <= c.max_aspect:
            out.append(f"aspect: {aspect:.2f} is outside {c.min_aspect:g}..{c.max_aspect:g}")
    return out


def duration_reasons(duration: float, c: CrawlConfig) -> list[str]:
    """The duration check (also run on the probed file)."""
    if duration < c.min_duration_s:
        return [f"duration: {duration:.0f}s is below {c.min_duration_s:g}s"]
    if duration > c.max_duration_s:
        return [f"duration: {duration:.0f}s is above {c.max_duration_s:g}s"]
    return []


def probe_reasons(p: Probe, c: CrawlConfig) -> list[str]:
    """The pre-filter's checks on the downloaded file (rotation applied: display size)."""
    w, h = (p.height, p.width) if p.rotation % 180 else (p.width, p.height)
    return size_reasons(w, h, c) + duration_reasons(p.duration_s, c)


# --------------------------------------------------------------------------------------------
# Dedup: the warehouse and a local ledger
# --------------------------------------------------------------------------------------------


class SeenIndex:
    """Which sources were recorded before (accepted or rejected): warehouse + local ledger."""

    def __init__(self, cfg: Config, use_warehouse: bool = True) -> None:
        self.cfg = cfg
        self.use_warehouse = use_warehouse
        self.ledger = cfg.artifacts_dir / LEDGER
        self.local: set[str] = set()
        if self.ledger.exists():
            for line in self.ledger.read_text(encoding="utf-8", errors="replace").splitlines():
                if line and not line.startswith("#"):
                    self.local.add(line.split("\t", 1)[0])

    def seen(self, video_id: str) -> bool:
        if video_id in self.local:
            return True
        if not self.use_warehouse:
            return False
        from spatialvid.warehouse import query

        sql = (f"SELECT count() FROM {self.cfg.warehouse.database}.videos "
               "WHERE video_id = {id:String}")
        try:
            rows = query(self.cfg, sql, {"id": video_id})["rows"]
        except FileNotFoundError:
            return False  # no warehouse yet: nothing was ever stored
        return bool(rows and int(rows[0][0]))

    def add(self, video_id: str, status: str, ref: str) -> None:
        """Remember a recorded source (after its record is flushed to Kafka)."""
        self.local.add(video_id)
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        clean = ref.replace("\t", " ").replace("\n", " ")
        with self.ledger.open("a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(f"{video_id}\t{status}\t{clean}\n")


# --------------------------------------------------------------------------------------------
# The producer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrawlCandidate(Candidate):
    """A listed source: its identity, the query that found it, and the listing's entry."""

    query: str = ""
    entry: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def video_id(self) -> str:
        # From the identity only (titles change): the same source always gets the same id.
        return slug_id(self.title, self.ref)


@dataclass
class CrawlStats(ProduceStats):
    """What a crawl did, for the summary line."""

    listed: int = 0
    skipped_seen: int = 0
    rejected: int = 0
    downloaded: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class _Quiet:
    """yt-dlp logger: its chatter to ``logging`` (debug), warnings and errors as such."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


# Messages of errors that retrying cannot fix.
_PERMANENT = ("unsupported url", "http error 404", "http error 403", "http error 410", "video unavailable",
              "private video", "not available", "has been removed", "sign in to confirm your age",
              "no video formats found", "requested format is not available")


def _is_url(s: str) -> bool:
    return "://" in s and s.split(":", 1)[0].lower() in ("http", "https", "file")


class CrawlProducer(VideoProducer):
    """Keyword searches and URLs through yt-dlp -> pre-filter -> download -> video records."""

    name = "crawl"
    source_kind = "crawl"

    def __init__(self, cfg: Config, inputs: Sequence[str] = (), queries: Sequence[str] | None = None,
                 max_videos: int | None = None, seen: SeenIndex | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(cfg)
        self.c = cfg.crawl
        self.inputs = list(inputs)
        self.queries = split_list(self.c.queries) if queries is None else list(queries)
        self.max_videos = max_videos
        self.seen = seen or SeenIndex(cfg)
        self.sleep = sleep
        self.sources_dir = cfg.artifacts_dir / "sources"
        self._last_request = 0.0
        self._lister: Any = None
        self._resolver: Any = None
        self.stats = CrawlStats()
        self.list_errors: list[tuple[str, CrawlError]] = []

    # -- yt-dlp ----------------------------------------------------------------------------
    def ydl_params(self, **extra: Any) -> dict[str, Any]:
        """The yt-dlp options every call shares."""
        params: dict[str, Any] = {
            "quiet": True, "no_warnings": True, "noprogress": True, "logger": _Quiet(),
            "format": self.c.format, "retries": self.c.retries, "fragment_retries": self.c.retries,
            "extractor_retries": self.c.retries, "socket_timeout": self.c.socket_timeout_s,
            "continuedl": True, "nopart": False, "overwrites": False, "restrictfilenames": True,
            "enable_file_urls": self.c.enable_file_urls, "noplaylist": False, "ignoreerrors": False,
            "check_formats": False, "writeinfojson": False, "writethumbnail": False,
        }
        if self.c.rate_limit_bps > 0:
            params["ratelimit"] = self.c.rate_limit_bps
        params.update(extra)
        return params

    def _ydl(self, flat: bool) -> Any:
        import yt_dlp

        if flat and self._lister is None:
            self._lister = yt_dlp.YoutubeDL(self.ydl_params(extract_flat="in_playlist"))
        if not flat and self._resolver is None:
            self._resolver = yt_dlp.YoutubeDL(self.ydl_params())
        return self._lister if flat else self._resolver

    def _pace(self) -> None:
        """At most one request to a site every ``pace_s`` seconds (with a little jitter)."""
        wait = self._last_request + self.c.pace_s * random.uniform(1.0, 1.25) - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        self._last_request = time.monotonic()

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (paced); retry transient failures with exponential backoff."""
        from yt_dlp.utils import DownloadError, ExtractorError

        attempt = 0
        while True:
            self._pace()
            try:
                return fn()
            except (DownloadError, ExtractorError, OSError) as exc:
                msg = str(exc)
                if attempt >= self.c.retries or any(p in msg.lower() for p in _PERMANENT):
                    raise CrawlError(f"{what}: {msg.removeprefix('ERROR: ')}") from exc
                delay = self.c.backoff_s * 2 ** attempt * random.uniform(0.8, 1.2)
                attempt += 1
                log.warning("%s failed (%s); retry %d/%d in %.1fs", what, msg, attempt, self.c.retries, delay)
                self.sleep(delay)

    # -- listing -----------------------------------------------------------------------------
    def sources(self) -> Iterator[tuple[str, str]]:
        """(what to list, the query it stands for): searches first, then URLs and lists."""
        for q in self.queries:
            yield f"{self.c.search_prefix}{self.c.results_per_query}:{q}", q
        for item in self.inputs:
            if item.startswith("@"):
                for line in Path(item[1:]).read_text(encoding="utf-8", errors="replace").splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        yield line, ""
            else:
                yield item, ""

    def candidates(self) -> Iterator[CrawlCandidate]:
        """Every listed entry (lazily: a search is paged as it is consumed), each source once.

        A URL that names one known video is checked against the seen index before it is
        even listed, so a second crawl of the same URL list makes no request at all."""
        from yt_dlp.utils import DownloadError, ExtractorError

        emitted: set[str] = set()
        for target, query in self.sources():
            if _is_url(target):
                pre = self.candidate(self.url_entry(target), query)
                if self.seen.seen(pre.video_id):
                    self.stats.skipped_seen += 1
                    continue
            try:
                listing = self._retrying(f"listing {target}", lambda: self._ydl(True).extract_info(
                    target, download=False, process=False))
            except CrawlError as exc:
                log.warning("%s", exc)
                self.list_errors.append((target, exc))
                continue
            if listing.get("_type") == "playlist":
                pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]] = (
                    (e, e) for e in listing.get("entries") or [] if isinstance(e, dict))
            else:  # one video: its identity is the URL it was asked for (or its extractor id)
                pairs = [(self.url_entry(target), listing)]
            try:
                for ident, entry in pairs:  # a search is paged lazily: errors can come from here
                    cand = self.candidate(ident, query)
                    if cand.ref in emitted:
                        continue
                    emitted.add(cand.ref)
                    yield dataclasses.replace(cand, entry=dict(entry))
            except (DownloadError, ExtractorError, OSError) as exc:
                err = CrawlError(f"listing {target}: {str(exc).removeprefix('ERROR: ')}")
                log.warning("%s", err)
                self.list_errors.append((target, err))

    @staticmethod
    def url_entry(url: str) -> dict[str, Any]:
        """A URL as a listing entry: with its extractor and video id when a site extractor
        recognises it (as yt-dlp's download archive does), else just the URL."""
        from yt_dlp.extractor import gen_extractor_classes

        for ie in gen_extractor_classes():
            if ie.ie_key() == "Generic" or not ie.suitable(url):
                continue
            try:
                vid = ie.get_temp_id(url)
            except Exception:  # an extractor whose pattern has no id group
                vid = None
            return {"_type": "url", "url": url, "ie_key": ie.ie_key(), "id": vid} if vid else {"_type": "url", "url": url}
        return {"_type": "url", "url": url}

    def candidate(self, entry: Mapping[str, Any], query: str) -> CrawlCandidate:
        """The identity of a listed entry, before any request about it."""
        from yt_dlp.utils import unsmuggle_url

        ie, vid = entry.get("ie_key") or entry.get("extractor_key"), entry.get("id")
        url = unsmuggle_url(str(entry.get("url") or entry.get("webpage_url") or ""))[0]
        if ie and vid and str(ie).lower() != "generic":
            ref, name = f"{str(ie).lower()} {vid}", f"{ie}-{vid}"
        else:  # a page or file URL: the URL is the identity
            ref = url or f"generic {vid}"
            name = Path(urllib.parse.urlparse(url).path).stem or str(vid or "video")
        return CrawlCandidate(ref=ref, title=name, metadata={"query": query}, query=query, entry=dict(entry))

    # -- one source ---------------------------------------------------------------------------
    def describe(self, cand: CrawlCandidate) -> dict[str, Any]:
        """Full metadata of a listed entry (formats selected), no download."""
        entry = dict(cand.entry)
        info = self._retrying(f"metadata of {cand.ref}", lambda: self._ydl(False).process_ie_result(
            entry, download=False))
        if not isinstance(info, dict) or info.get("_type") == "playlist":
            raise CrawlError(f"{cand.ref} is a playlist inside a playlist; list it directly")
        return info

    def fetch(self, cand: Candidate, info: Mapping[str, Any] | None = None) -> Path:
        """Download the source into ``<artifacts>/sources/<video_id>.<ext>`` (resumable)."""
        import yt_dlp

        assert isinstance(cand, CrawlCandidate)
        info = dict(info or self.describe(cand))
        root = self.sources_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        outtmpl = str(root / f"{cand.video_id}.%(ext)s")

        def download() -> Any:
            with yt_dlp.YoutubeDL(self.ydl_params(outtmpl={"default": outtmpl})) as ydl:
                return ydl.process_ie_result(dict(info), download=True)

        result = self._retrying(f"download of {cand.ref}", download)
        files = [d.get("filepath") for d in (result or {}).get("requested_downloads") or [] if d.get("filepath")]
        if not files:
            raise CrawlError(f"download of {cand.ref} produced no file")
        path = Path(files[-1]).resolve()
        if root not in path.parents:  # never trust a name built from remote metadata
            path.unlink(missing_ok=True)
            raise CrawlError(f"download of {cand.ref} landed outside the artifact store; removed")
        return path

    def record(self, cand: CrawlCandidate, info: Mapping[str, Any], path: Path | None, probe: Probe | None,
               reasons: list[str]) -> VideoRecord:
        """The video record of a source (accepted with its probe, or rejected with reasons)."""
        from yt_dlp.utils import unsmuggle_url

        w, h = video_size(info)
        fps = info.get("fps")
        duration = info.get("duration")
        text = lambda k: str(info.get(k) or "")  # noqa: E731
        return VideoRecord(
            video_id=cand.video_id, uri=str(path) if path else "", source=self.source_kind,
            title=text("title") or cand.title, query=cand.query,
            duration_s=probe.duration_s if probe else float(duration or 0.0),
            fps=probe.fps if probe else float(fps or 0.0),
            width=probe.width if probe else int(w or 0), height=probe.height if probe else int(h or 0),
            num_frames=probe.num_frames if probe else int(round(float(duration or 0) * float(fps or 0))),
            codec=probe.codec if probe else text("vcodec"), rotation=probe.rotation if probe else 0,
            size_bytes=probe.size_bytes if probe else int(info.get("filesize") or info.get("filesize_approx") or 0),
            source_ref=cand.ref, webpage_url=unsmuggle_url(text("webpage_url"))[0] or cand.ref,
            uploader=text("uploader") or text("channel"), upload_date=self._upload_date(info),
            license=text("license"), accepted=not reasons, reject_reasons=reasons,
        )

    @staticmethod
    def _upload_date(info: Mapping[str, Any]) -> str:
        if info.get("upload_date"):
            return str(info["upload_date"])
        ts = info.get("timestamp")
        if isinstance(ts, (int, float)):
            return time.strftime("%Y%m%d", time.gmtime(ts))
        return ""

    # -- the loop ------------------------------------------------------------------------------
    def run(self, out: RecordProducer | None, on_item: Callable[[], None] | None = None,
            candidates: Iterable[Candidate] | None = None, dry_run: bool = False) -> CrawlStats:
        """Crawl: one video record (accepted or rejected) or dead letter per new source.

        ``dry_run``: list and pre-filter only; print nothing to Kafka, download nothing.
        """
        if out is None and not dry_run:
            raise ValueError("a crawl that is not a dry run needs a RecordProducer")
        stats = self.stats = CrawlStats()
        self.list_errors = []
        for cand in self.candidates() if candidates is None else candidates:
            assert isinstance(cand, CrawlCandidate)
            if self.max_videos is not None and stats.videos + stats.rejected >= self.max_videos:
                break
            stats.listed += 1
            if self.seen.seen(cand.video_id):
                stats.skipped_seen += 1
                continue
            try:
                info = self.describe(cand)
                reasons = prefilter(info, self.c)
                path = probe = None
                if not reasons and not dry_run:
                    path = self.fetch(cand, info)
                    stats.downloaded += 1
                    probe = probe_video(path)
                    reasons = probe_reasons(probe, self.c)
                    if reasons:  # what the metadata did not say; the file is of no use
                        path.unlink(missing_ok=True)
                        path = None
                rec = self.record(cand, info, path, probe, reasons)
            except (VideoError, OSError) as exc:
                stats.dead_letters += 1
                if not dry_run:
                    payload = json.dumps({"ref": cand.ref, "query": cand.query, "title": cand.title},
                                         ensure_ascii=False)
                    out.send(dead_letter(f"produce-{self.name}", exc, payload.encode("utf-8", "surrogateescape"),
                                         source_key=cand.video_id))
                    out.flush()
                log.warning("crawl: %s: %s", cand.ref, exc)
            else:
                for r in reasons:
                    key = r.split(":", 1)[0]
                    stats.reasons[key] = stats.reasons.get(key, 0) + 1
                if reasons:
                    stats.rejected += 1
                else:
                    stats.videos += 1
                    stats.video_ids.append(cand.video_id)
                if not dry_run:
                    out.send(rec)
                    out.flush()  # durable in Kafka before the ledger says "done"
                    self.seen.add(cand.video_id, "accepted" if not reasons else "rejected", cand.ref)
                self.on_record(rec)
            if on_item:
                on_item()
        if not dry_run:
            out.flush()
        return stats

    def on_record(self, rec: VideoRecord) -> None:
        """Hook for callers that show progress per source (the CLI prints a line)."""
