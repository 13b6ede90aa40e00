"""The crawl producer, driven through the real yt-dlp against a local video site (real HTTP,
real files, schema.org JSON-LD pages and an RSS feed that yt-dlp's generic extractor reads).

What it proves: the pre-filter rejects on metadata before any byte of the video is fetched;
accepted sources are downloaded once into the artifact store, also across restarts (a new
producer with the local ledger, and a new process that asks the warehouse); rejected sources
are recorded with reasons; an interrupted download resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spatialvid.config import Config, CrawlConfig
from spatialvid.kafka import RecordProducer
from spatialvid.producers.crawl import LEDGER, CrawlProducer, SeenIndex, prefilter
from spatialvid.warehouse import QueryServer

from .conftest import SinkThread, wait_for
from .media_site import Item, MediaSite, make_video

# -- the pre-filter, a pure function of yt-dlp's info dict -------------------------------------

OK = {"title": "Paris walking tour", "duration": 600, "width": 1920, "height": 1080, "live_status": "not_live",
      "webpage_url": "https://www.youtube.com/watch?v=abc"}


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"width": None, "height": None, "duration": None}, None),  # unknown: checked after download
    ({"title": "Best drone COMPILATION 2024"}, "title"),
    ({"duration": 12}, "duration"),
    ({"duration": 4 * 3600}, "duration"),
    ({"width": 1280, "height": 718}, "resolution"),
    ({"width": 1080, "height": 1080, "formats": [{"width": 1080, "height": 1080, "vcodec": "avc1"}]}, "aspect"),
    ({"is_live": True, "live_status": "is_live"}, "live"),
    ({"live_status": "is_upcoming"}, "live"),
    ({"webpage_url": "https://www.youtube.com/shorts/abc"}, "short"),
    ({"width": 1080, "height": 1920, "duration": 45}, "short"),
])
def test_prefilter_names_the_failed_check(change: dict, reason: str | None) -> None:
    got = prefilter({**OK, **change}, CrawlConfig())
    assert [r.split(":")[0] for r in got][:1] == ([reason] if reason else []), got


def test_prefilter_takes_the_best_format_and_honours_allow_keywords() -> None:
    info = {**OK, "width": 640, "height": 360,
            "formats": [{"width": 640, "height": 360, "vcodec": "avc1"}, {"width": 1920, "height": 1080, "vcodec": "vp9"},
                        {"vcodec": "none", "width": None}]}
    assert prefilter(info, CrawlConfig()) == []
    assert prefilter(info, CrawlConfig(title_allow="drone,aerial")) == ["title: contains none of drone, aerial"]


# -- against the local site ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("site")
    return {"hd": make_video(d / "hd.mp4", 1280, 720, 1.5), "sd": make_video(d / "sd.mp4", 640, 360, 1.5)}


def site_items(files: dict[str, Path]) -> list[Item]:
    return [
        Item("walk", "Old town walk", files["hd"], 1280, 720, 1.5),
        Item("tour", "Harbour tour", files["hd"], 1280, 720, 1.5, uploader="Tour Guy", upload_date="2023-02-03"),
        Item("lowres", "Village walk (360p)", files["sd"], 640, 360, 1.5),
        Item("compil", "Drone compilation", files["hd"], 1280, 720, 1.5),
        Item("long", "Ten hour walk", files["hd"], 1280, 720, 36000),
        Item("vertical", "Phone walk", files["hd"], 720, 1280, 90),
        Item("liar", "Says 720p, is 360p", files["sd"], 1280, 720, 1.5),  # caught after download
    ]


def crawl_cfg(cfg: Config) -> Config:
    cfg.crawl.min_duration_s = 1.0
    cfg.crawl.pace_s = 0.0
    cfg.crawl.backoff_s = 0.05
    return cfg


class Collect:
    """Keeps records in memory (for the tests that need no broker)."""

    def __init__(self) -> None:
        self.records: list = []

    def send(self, r) -> None:  # type: ignore[no-untyped-def]
        self.records.append(r)

    def flush(self) -> None:
        pass


def test_feed_crawl_prefilters_downloads_once_and_records_rejections(cfg: Config, warehouse, files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    crawl_cfg(cfg)
    db = cfg.warehouse.database
    with MediaSite(site_items(files)) as site:
        feed = f"{site.base}/feed.xml"
        with SinkThread(cfg, warehouse):
            producer = CrawlProducer(cfg, [feed, site.page_url("walk")], queries=[],
                                     seen=SeenIndex(cfg, use_warehouse=False))
            stats = producer.run(RecordProducer(cfg))
            wait_for(lambda: int(warehouse.query(f"SELECT count() FROM {db}.videos").result_rows[0][0]) >= 7, 60,
                     "7 video records in the warehouse")
        # Only the accepted sources and the one whose metadata lied were fetched, each once.
        assert site.media_gets() == {"/media/walk.mp4": 1, "/media/tour.mp4": 1, "/media/liar.mp4": 1}
        assert (stats.videos, stats.rejected, stats.downloaded, stats.dead_letters) == (2, 5, 3, 0), stats
        rows = warehouse.query(f"SELECT title, accepted, reject_reasons, uri, uploader, upload_date, width, height, "
                               f"source_ref FROM {db}.videos FINAL ORDER BY title").result_rows
        by_title = {r[0]: r[1:] for r in rows}
        assert {t for t, r in by_title.items() if r[0]} == {"Old town walk", "Harbour tour"}
        reasons = {t: r[1][0].split(":")[0] for t, r in by_title.items() if not r[0]}
        assert reasons == {"Village walk (360p)": "resolution", "Drone compilation": "title", "Ten hour walk": "duration",
                           "Phone walk": "aspect", "Says 720p, is 360p": "resolution"}, reasons
        accepted, uploader, date, w, h = by_title["Harbour tour"][0], *by_title["Harbour tour"][3:7]
        assert (uploader, date, w, h) == ("Tour Guy", "20230203", 1280, 720)
        store = cfg.artifacts_dir.resolve()
        for t, (ok, _, uri, *_rest) in by_title.items():
            if ok:
                assert store in Path(uri).parents and Path(uri).read_bytes() == files["hd"].read_bytes(), t
            else:
                assert uri == "", f"{t}: a rejected source has no file"
        assert sorted(p.name for p in (store / "sources").iterdir()) == sorted(
            Path(r[2]).name for r in by_title.values() if r[0]), "a rejected download was kept"
        # The pass rate of the pre-filter is one query.
        rate = warehouse.query(f"SELECT countIf(accepted) / count() FROM {db}.videos FINAL WHERE source = 'crawl'"
                               ).result_rows[0][0]
        assert rate == pytest.approx(2 / 7)

        # A restart (a new producer, same data folder): nothing is fetched or recorded again.
        again = Collect()
        stats2 = CrawlProducer(cfg, [feed, site.page_url("walk")], queries=[],
                               seen=SeenIndex(cfg, use_warehouse=False)).run(again)
        assert again.records == [] and stats2.downloaded == 0 and stats2.skipped_seen == 8, stats2
        assert sum(site.media_gets().values()) == 3, site.media_gets()


def test_a_new_process_asks_the_warehouse_and_downloads_nothing_twice(cfg: Config, warehouse, files) -> None:  # type: ignore[no-untyped-def]
    """Two `spatialvid crawl` processes; before the second the local ledger and the downloaded
    files are gone (another machine, say): only the warehouse remembers."""
    crawl_cfg(cfg)
    db = cfg.warehouse.database
    env = {**os.environ, **cfg.to_env()}
    cfg.warehouse_path.mkdir(parents=True, exist_ok=True)
    server = QueryServer(warehouse, cfg, threading.Lock()).start()
    try:
        with MediaSite(site_items(files)[:3]) as site, SinkThread(cfg, warehouse):
            cmd = [sys.executable, "-m", "spatialvid.cli", "crawl", f"{site.base}/feed.xml", site.page_url("tour")]
            first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert first.returncode == 0, first.stderr[-2000:]
            assert "2 accepted" in first.stdout and "1 rejected" in first.stdout, first.stdout
            wait_for(lambda: int(warehouse.query(f"SELECT count() FROM {db}.videos").result_rows[0][0]) >= 3, 60,
                     "3 video records in the warehouse")
            (cfg.artifacts_dir / LEDGER).unlink()
            for f in (cfg.artifacts_dir / "sources").iterdir():
                f.unlink()
            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 0, second.stderr[-2000:]
            assert site.media_gets() == {"/media/walk.mp4": 1, "/media/tour.mp4": 1}, site.media_gets()
            assert "4 already seen" in second.stdout and "0 accepted" in second.stdout, second.stdout
            assert "/v/tour.html" not in {p for p, n in site.gets.items() if n > 1}, "the page URL was fetched again"
    finally:
        server.stop()


def test_an_interrupted_download_resumes_from_its_part_file(cfg: Config, files: dict[str, Path]) -> None:
    crawl_cfg(cfg)
    with MediaSite(site_items(files)[:1]) as site:
        producer = CrawlProducer(cfg, [site.page_url("walk")], queries=[], seen=SeenIndex(cfg, use_warehouse=False))
        video_id = next(iter(producer.candidates())).video_id
        data = files["hd"].read_bytes()
        part = cfg.artifacts_dir / "sources" / f"{video_id}.mp4.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[: len(data) // 2])  # what a crash mid-download leaves
        out = Collect()
        stats = CrawlProducer(cfg, [site.page_url("walk")], queries=[],
                              seen=SeenIndex(cfg, use_warehouse=False)).run(out)
        assert stats.videos == 1, stats
        assert any(f"bytes={len(data) // 2}-" in r for r in site.ranges), f"no resume request: {site.ranges}"
        assert Path(out.records[0].uri).read_bytes() == data
        assert not part.exists()


def test_unreachable_sources_become_dead_letters_and_the_crawl_goes_on(cfg: Config, files) -> None:  # type: ignore[no-untyped-def]
    crawl_cfg(cfg)
    cfg.crawl.retries = 1
    with MediaSite(site_items(files)[:1]) as site:
        gone = f"{site.base}/v/missing.html"
        out = Collect()
        producer = CrawlProducer(cfg, [gone, site.page_url("walk")], queries=[], seen=SeenIndex(cfg, use_warehouse=False))
        stats = producer.run(out)
    assert stats.videos == 1 and len(producer.list_errors) == 1 and "404" in str(producer.list_errors[0][1])
