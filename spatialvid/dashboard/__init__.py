"""The live dashboard: a small web page over the warehouse's read-only SQL.

Served by the process that owns the embedded warehouse (``spatialvid run --dashboard
PORT``), or next to a running owner or a ClickHouse server (``spatialvid dashboard``).
The page (``static/``) polls ``/api/panels`` every few seconds; each panel is one
read-only query from :mod:`spatialvid.dashboard.queries` with bound parameters, run
through ``run_readonly`` (``SETTINGS readonly = 1``), and the page shows the SQL next
to its numbers. Consumer lag comes from Kafka itself (committed offsets against the
end of each partition); the trajectory of a clip is drawn from its annotation folder.

Endpoints: ``/`` (the page), ``/static/*``, ``/api/panels``, ``/api/lag``,
``/api/trajectory.png?clip=ID``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from spatialvid.config import Config
from spatialvid.stats import QueryFn

from .queries import Panel, artifacts_sql, hq_view_sql, panels

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def kafka_lag(cfg: Config, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Consumer lag per stage group and topic: end offset minus committed offset.

    Groups are the registered stages (each reads its input topic) and the sink (every
    topic). The embedded broker (tansu) misreports the end offset after multi-message
    produce batches, so its lag numbers are approximate; Apache Kafka's are exact.
    """
    if not cfg.kafka.bootstrap:
        return []
    from confluent_kafka import Consumer, TopicPartition

    from spatialvid.kafka import TOPICS, consumer_conf
    from spatialvid.runtime import STAGES

    try:
        import spatialvid.processors  # noqa: F401  (registers the built-in stages)
    except Exception:  # a stage whose optional dependency is missing: show the others
        log.debug("not every stage could be imported", exc_info=True)
    groups = {name: [cls.input.topic] for name, cls in sorted(STAGES.items())}
    groups["sink"] = list(TOPICS)
    out: list[dict[str, Any]] = []
    probe = Consumer(consumer_conf(cfg, "dashboard-lag-probe"))
    try:
        meta = probe.list_topics(timeout=timeout_s)
        for group, topics in groups.items():
            c = Consumer(consumer_conf(cfg, group))
            try:
                for topic in topics:
                    full = cfg.topic(topic)
                    if full not in meta.topics:
                        continue
                    parts = [TopicPartition(full, p) for p in meta.topics[full].partitions]
                    committed = c.committed(parts, timeout=timeout_s)
                    lag = done = end_total = 0
                    for tp in committed:
                        _, hi = probe.get_watermark_offsets(TopicPartition(full, tp.partition), timeout=timeout_s)
                        done_p = max(tp.offset, 0)
                        end_total += hi
                        done += done_p
                        lag += max(hi - done_p, 0)
                    out.append({"group": group, "topic": topic, "committed": done, "end": end_total, "lag": lag})
            finally:
                c.close()
    finally:
        probe.close()
    return out


class DashboardServer:
    """Serves the dashboard on ``host:port`` (port 0 picks a free one) from a thread."""

    def __init__(self, query: QueryFn, cfg: Config, host: str | None = None, port: int | None = None,
                 lag: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.query, self.cfg = query, cfg
        self.db = cfg.warehouse.database
        self._lag_fn = lag if lag is not None else (lambda: kafka_lag(cfg))
        self._lag: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._lag_lock = threading.Lock()
        self._png_dir = Path(tempfile.mkdtemp(prefix="spatialvid-dashboard-"))
        # The panels' SQL depends only on whether the HQ view exists: built once per case.
        self._panels: dict[str | None, dict[str, Panel]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                qs = urllib.parse.parse_qs(url.query)
                try:
                    if url.path in ("/", "/index.html"):
                        self._file(STATIC / "index.html")
                    elif url.path.startswith("/static/"):
                        name = url.path[len("/static/"):]
                        target = (STATIC / name).resolve()
                        if STATIC.resolve() not in target.parents or not target.is_file():
                            self.send_error(404)
                            return
                        self._file(target)
                    elif url.path == "/api/panels":
                        self._json(server.panels_payload())
                    elif url.path == "/api/lag":
                        self._json({"lag": server.lag()})
                    elif url.path == "/api/trajectory.png":
                        png = server.trajectory_png(qs.get("clip", [""])[0])
                        if png is None:
                            self.send_error(404, "no trajectory for this clip")
                            return
                        self._send(png.read_bytes(), "image/png")
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):  # the browser moved on
                    pass
                except Exception as exc:  # the page shows the message; the server keeps serving
                    log.warning("dashboard request %s failed: %s", self.path, exc)
                    self._json({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}, 500)

            def _file(self, path: Path) -> None:
                self._send(path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))

            def _json(self, obj: Any, code: int = 200) -> None:
                self._send(json.dumps(obj, default=str).encode(), "application/json", code)

            def _send(self, data: bytes, ctype: str, code: int = 200) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host or cfg.dashboard.host, cfg.dashboard.port if port is None else port),
                                         Handler)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "DashboardServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- data -----------------------------------------------------------------------
    def hq_table(self) -> str | None:
        name = f"hq_{self.cfg.hq.name}"
        rows = self.query(hq_view_sql(), {"db": self.db, "name": name})["rows"]
        return f"{self.db}.{name}" if rows and int(rows[0][0]) else None

    def current_panels(self) -> dict[str, Panel]:
        hq = self.hq_table()
        if hq not in self._panels:
            self._panels[hq] = panels(self.db, minutes=self.cfg.dashboard.window_minutes, hq_table=hq)
        return self._panels[hq]

    def panels_payload(self) -> dict[str, Any]:
        """Every panel's title, SQL, parameters, columns and rows, plus the lag table."""
        out: dict[str, Any] = {}
        t0 = time.perf_counter()
        for name, p in self.current_panels().items():
            out[name] = {"title": p.title, "kind": p.kind, "sql": p.sql, "params": p.params}
            try:
                out[name].update(self.query(p.sql, p.params))
            except Exception as exc:
                out[name]["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"database": self.db, "refresh_s": self.cfg.dashboard.refresh_s, "generated_at": time.time(),
                "query_s": round(time.perf_counter() - t0, 4), "panels": out, "lag": self.lag()}

    def lag(self, max_age_s: float = 5.0) -> list[dict[str, Any]]:
        """Consumer lag, refreshed at most every ``max_age_s`` (it opens Kafka consumers)."""
        with self._lag_lock:
            at, value = self._lag
            if time.monotonic() - at > max_age_s:
                try:
                    value = self._lag_fn()
                except Exception as exc:
                    value = [{"group": "-", "topic": "-", "error": str(exc).splitlines()[0]}]
                self._lag = (time.monotonic(), value)
            return value

    def trajectory_png(self, clip_id: str) -> Path | None:
        """Render (once) the trajectory of ``clip_id`` from its annotation folder."""
        if not clip_id:
            return None
        rows = self.query(artifacts_sql(self.db), {"clip": clip_id})["rows"]
        if not rows or not rows[0][0]:
            return None
        from spatialvid.processors.geometry.plot import render_trajectory
        from spatialvid.sinks.release import read_clip_annotations

        uri = str(rows[0][0])
        out = self._png_dir / (hashlib.sha1(f"{clip_id}\x1f{uri}".encode()).hexdigest() + ".png")
        if not out.exists():
            ann = read_clip_annotations(uri, masks=False)
            render_trajectory(ann.poses, ann.instructions, out, title=clip_id, dpi=70)
        return out


def embedded_query(client: Any, lock: threading.Lock) -> QueryFn:
    """A query function over a client this process owns (shares the owner's lock)."""
    from spatialvid.warehouse import run_readonly

    return lambda sql, params: run_readonly(client, sql, params, lock)


def remote_query(cfg: Config) -> QueryFn:
    """A query function through the owner's endpoint or a ClickHouse server."""
    from spatialvid.warehouse import query

    return lambda sql, params: query(cfg, sql, params)
