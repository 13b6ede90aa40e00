"""The live dashboard in a real headless browser (Debian's Chromium) over the real sink and chDB.

Records travel through the real broker into the real ClickHouse sink; the page is
served by the process that owns the warehouse; every number the page shows is compared
with what the panel's own SQL returns, before and after new clips land.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spatialvid.config import Config
from spatialvid.dashboard import DashboardServer, embedded_query, kafka_lag
from spatialvid.dashboard.queries import panels
from spatialvid.kafka import RecordProducer
from spatialvid.runtime import StopFlag
from spatialvid.sinks.clickhouse import ClickHouseSink
from spatialvid.warehouse import ReadOnlyViolation, run_readonly

from .conftest import wait_for
from .synthetic import population

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TABLE_PANELS = ("pass_rates", "funnel", "dead_letters", "latest_clips")


def _raw(v: Any) -> str:
    """What the page keeps in data-value (app.js raw()): strings as is, JSON otherwise."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # JSON.stringify(2.0) is "2"
    return "" if v is None else v if isinstance(v, str) else json.dumps(v)


def _expected(warehouse, lock: threading.Lock, cfg: Config, hq_table: str | None) -> dict[str, list[list[str]]]:  # type: ignore[no-untyped-def]
    out = {}
    for name, p in panels(cfg.warehouse.database, cfg.dashboard.window_minutes, hq_table=hq_table).items():
        rows = json.loads(json.dumps(run_readonly(warehouse, p.sql, p.params, lock)["rows"], default=str))
        out[name] = [[_raw(v) for v in r] for r in rows]
    return out


_READ_PAGE = """
const out = {};
for (const sec of document.querySelectorAll('[data-panel]')) {
  const t = sec.querySelector(':scope > table.data');
  if (t) out[sec.dataset.panel] = [...t.querySelectorAll('tr[data-row]')].map(
      tr => [...tr.querySelectorAll('td')].map(td => td.dataset.value));
}
out.totals = [[...document.querySelectorAll('[data-panel=totals] .n')].map(n => n.dataset.value)];
out.generation = Number(document.getElementById('status').dataset.generation);
return out;
"""


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="drives Chromium through selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,2000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _trajectory_folder(root: Path) -> str:
    from spatialvid.sinks.release import ClipAnnotations, write_clip_annotations

    n = 40
    poses = np.zeros((n, 7))
    poses[:, 2] = -0.05 * np.arange(n)
    poses[:, 6] = 1.0
    folder = root / "annotations" / "group_0000" / "clip"
    write_clip_annotations(folder, ClipAnnotations(poses=poses, intrinsics=np.tile([0.6, 1.0, 0.5, 0.5], (n, 1)),
                                                   frame_indexes=np.arange(n) * 5, instructions={"0->39": ["Dolly In"]}))
    return str(folder)


def test_dashboard_shows_the_sql_numbers_and_follows_new_clips(cfg: Config, warehouse, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    lock = threading.Lock()
    stop = StopFlag()
    sink = ClickHouseSink(cfg, warehouse, lock)
    sink_thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    sink_thread.start()
    producer = RecordProducer(cfg)
    uri = _trajectory_folder(tmp_path)
    first = population(120, seed=21, prefix="a", t0=datetime.now(timezone.utc), artifacts_uri=uri)
    for r in first:
        producer.send(r)
    producer.send_raw("scores", b"broken-clip", b'{"clip_id": "broken-clip"}')  # -> dead letter
    producer.flush()

    def count(sql: str) -> int:
        return int(run_readonly(warehouse, sql, None, lock)["rows"][0][0])

    n_scores = sum(1 for r in first if r.topic == "scores")
    wait_for(lambda: count(f"SELECT count() FROM {db}.clip_scores") == n_scores
             and count(f"SELECT count() FROM {db}.deadletters") == 1, 60, "the first batch in the warehouse")
    server = DashboardServer(embedded_query(warehouse, lock), cfg, port=0, lag=lambda: kafka_lag(cfg)).start()
    try:
        browser.get(server.url + "?refresh=0.5")
        wait_for(lambda: browser.execute_script(_READ_PAGE)["generation"] >= 1, 30, "the page's first refresh")
        page, want = browser.execute_script(_READ_PAGE), _expected(warehouse, lock, cfg, None)
        for name in TABLE_PANELS + ("totals",):
            assert page[name] == want[name], f"panel {name}: page {page[name][:3]} != SQL {want[name][:3]}"
        totals = dict(zip(["videos", "clips", "scored", "passed_all", "annotated", "captioned", "dead_letters"],
                          page["totals"][0]))
        assert totals["scored"] == str(n_scores) and totals["dead_letters"] == "1"
        assert any(r[1] == "MalformedRecord" for r in page["dead_letters"]), page["dead_letters"]
        assert len(page["latest_clips"]) == 20
        # The SQL is on the page next to its numbers; the pass-rate series is drawn.
        assert "pass_rates_minute" in browser.find_element("css selector", "[data-panel=pass_rates] pre").get_attribute("textContent")
        assert browser.find_elements("css selector", "[data-panel=pass_rate_series] svg path")
        # Consumer lag from Kafka: the sink's group has committed what it consumed.
        lag_rows = browser.execute_script(
            "return [...document.querySelectorAll('[data-panel=lag] tr[data-row]')].map(tr => [...tr.children].map(td => td.dataset.value))")
        sink_scores = [r for r in lag_rows if r[0] == "sink" and r[1] == "scores"]
        assert sink_scores and int(sink_scores[0][2]) >= n_scores + 1, lag_rows
        # The trajectory of the newest annotated clip is drawn by the server.
        wait_for(lambda: browser.execute_script(
            "const i = document.getElementById('trajectory-img'); return i.complete && i.naturalWidth > 100"),
            30, "the trajectory plot")

        # New clips land: the page follows without a reload.
        second = population(80, seed=22, prefix="b", t0=datetime.now(timezone.utc))
        for r in second:
            producer.send(r)
        producer.flush()
        n_scores += sum(1 for r in second if r.topic == "scores")
        wait_for(lambda: count(f"SELECT count() FROM {db}.clip_scores") == n_scores
                 and count(f"SELECT count() FROM {db}.clip_captions") == sum(1 for r in first + second if r.topic == "captions"),
                 60, "the second batch in the warehouse")
        want = _expected(warehouse, lock, cfg, None)
        gen = browser.execute_script(_READ_PAGE)["generation"]
        wait_for(lambda: browser.execute_script(_READ_PAGE)["generation"] >= gen + 2, 30, "two more refreshes")
        page = browser.execute_script(_READ_PAGE)
        for name in TABLE_PANELS + ("totals",):
            assert page[name] == want[name], f"panel {name} after new clips: page {page[name][:3]} != SQL {want[name][:3]}"
        assert page["totals"][0][2] == str(n_scores)
    finally:
        server.stop()
        stop.set()
        sink_thread.join(30)


def test_dashboard_sql_is_read_only_and_binds_its_parameters(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    lock = threading.Lock()
    for name, p in panels(cfg.warehouse.database, 5).items():
        assert "{" not in p.sql.replace("{minutes:UInt32}", "").replace("{limit:UInt32}", ""), name
        run_readonly(warehouse, p.sql, p.params, lock)  # every panel runs on an empty warehouse
    with pytest.raises(ReadOnlyViolation):
        embedded_query(warehouse, lock)(f"DROP TABLE {cfg.warehouse.database}.clips", None)
    server = DashboardServer(embedded_query(warehouse, lock), cfg, port=0, lag=lambda: []).start()
    try:
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError):  # no escape from static/
            urllib.request.urlopen(server.url + "static/../../config.py")
        with pytest.raises(urllib.error.HTTPError):  # an unknown clip has no trajectory
            urllib.request.urlopen(server.url + "api/trajectory.png?clip=x'%20OR%201=1")
        body = json.loads(urllib.request.urlopen(server.url + "api/panels").read())
        assert set(body["panels"]) >= {"totals", "funnel", "throughput", "latest_clips"}
        assert all("error" not in p for p in body["panels"].values()), body["panels"]
    finally:
        server.stop()
