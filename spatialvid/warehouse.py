"""The warehouse: ClickHouse through clickhouse-connect, embedded (chDB) or a server.

One code path: ``interface='chdb'`` at ``warehouse.path`` by default, HTTP(S) to a
ClickHouse server when ``warehouse.url`` is set. chDB allows one process per data
folder, so in embedded mode the process that owns it (the sink) also serves read-only
queries to the others over a loopback HTTP endpoint, advertised in ``owner.json``
inside the data folder. ``query()`` finds the right way by itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from .config import Config
from spatialvid.schemas.ddl import columns, table_ddl, view_ddl
from spatialvid.schemas.records import RECORD_TYPES

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
_READ_VERBS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")


class WarehouseBusy(RuntimeError):
    """The embedded warehouse is owned by another process that does not answer."""


class ReadOnlyViolation(ValueError):
    """A statement that is not a single read-only query."""


def connect(cfg: Config) -> Client:
    """Open the warehouse for writing (embedded: this process becomes its owner)."""
    if cfg.warehouse.url:
        return clickhouse_connect.get_client(dsn=cfg.warehouse.url)
    path = cfg.warehouse_path
    owner = _live_owner(path)
    if owner is not None:
        raise WarehouseBusy(
            f"the warehouse at {path} is open in process {owner['pid']}; stop it first, or query through it "
            f"(spatialvid sql ...)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(interface="chdb", path=str(path))


def init_schema(client: Client, cfg: Config) -> None:
    """Create the database, tables and views (idempotent), and add the columns that newer
    record versions brought to tables an older version created (fields are only ever added)."""
    db = cfg.warehouse.database
    _drop_old_clip_latest(client, db)
    for stmt in table_ddl(db):
        client.command(stmt)
    have = {(t, c) for t, c in client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}", parameters={"db": db}).result_rows}
    for model in RECORD_TYPES:
        for name, ctype in columns(model).items():
            if (model.table, name) not in have:
                log.info("warehouse: adding column %s.%s (%s), new in this record version", model.table, name, ctype)
                client.command(f"ALTER TABLE {db}.{model.table} ADD COLUMN IF NOT EXISTS `{name}` {ctype}")
    for stmt in view_ddl(db):  # the views may read the added columns
        client.command(stmt)


def _drop_old_clip_latest(client: Client, db: str) -> None:
    """``clip_latest`` kept argMax states before it kept one tuple per source (column ``s``):
    drop that layout and its views, so the schema recreates them and refills the table from
    the record tables (derived data: nothing is lost)."""
    old = client.query("SELECT count() FROM system.columns WHERE database = {db:String} AND table = 'clip_latest' "
                       "AND name = 's_aesthetic' AND type LIKE 'AggregateFunction%'", parameters={"db": db})
    if not old.result_rows[0][0]:
        return
    log.warning("warehouse: rebuilding %s.clip_latest in its new layout from the record tables", db)
    for source in ("scores", "annotations", "clean_annotations", "captions"):
        client.command(f"DROP VIEW IF EXISTS {db}.clip_latest_{source}_mv")
    client.command(f"DROP TABLE {db}.clip_latest")


def readonly_sql(sql: str) -> str:
    """Check that ``sql`` is one read-only statement and pin ``readonly=1`` on it."""
    text = sql.strip().rstrip(";").strip()
    if ";" in text:
        raise ReadOnlyViolation("one statement at a time, please (found ';')")
    verb = text.split(None, 1)[0].upper() if text else ""
    if verb not in _READ_VERBS:
        raise ReadOnlyViolation(f"only read-only queries ({', '.join(_READ_VERBS)}) are allowed here, not {verb or 'an empty query'}")
    if re.search(r"\bSETTINGS\b|\breadonly\b", text, re.IGNORECASE):
        raise ReadOnlyViolation("SETTINGS clauses are not accepted on the read-only path")
    # A query-level setting: scoped to this statement, enforced by the engine itself.
    return f"{text}\nSETTINGS readonly = 1"


def run_readonly(client: Client, sql: str, parameters: dict[str, Any] | None = None, lock: threading.Lock | None = None) -> dict[str, Any]:
    """Run a read-only query; parameters are bound by the engine, never formatted in."""
    stmt = readonly_sql(sql)
    with lock or contextlib.nullcontext():
        result = client.query(stmt, parameters=parameters or None)
    return {"columns": list(result.column_names), "rows": [list(r) for r in result.result_rows]}


# -- the owner's endpoint ---------------------------------------------------------------
class QueryServer:
    """Serves read-only queries of the owning process on 127.0.0.1 (POST /query)."""

    def __init__(self, client: Client, cfg: Config, lock: threading.Lock) -> None:
        self.client, self.cfg, self.lock = client, cfg, lock
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the terminal clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/query":
                    self.send_error(404)
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    out = run_readonly(server.client, body["sql"], body.get("parameters"), server.lock)
                    code = 200
                except ReadOnlyViolation as exc:
                    out, code = {"error": str(exc)}, 400
                except Exception as exc:  # the engine's message is the useful part
                    out, code = {"error": str(exc).splitlines()[0]}, 400
                data = json.dumps(out, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="warehouse-http", daemon=True)
        self._owner_file = cfg.warehouse_path / OWNER_FILE

    def start(self) -> "QueryServer":
        self._thread.start()
        tmp = self._owner_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "port": self.port}))
        os.replace(tmp, self._owner_file)
        return self

    def stop(self) -> None:
        self._owner_file.unlink(missing_ok=True)
        self.httpd.shutdown()
        self.httpd.server_close()


def _live_owner(path: Path) -> dict[str, Any] | None:
    f = path / OWNER_FILE
    try:
        owner = json.loads(f.read_text())
        os.kill(int(owner["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return owner if owner["pid"] != os.getpid() else None


def query(cfg: Config, sql: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a read-only query wherever the warehouse is: server, owning process, or here."""
    if not cfg.warehouse.url:
        owner = _live_owner(cfg.warehouse_path)
        if owner is not None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{owner['port']}/query",
                data=json.dumps({"sql": sql, "parameters": parameters or {}}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                raise ValueError(json.loads(exc.read()).get("error", str(exc))) from None
            except OSError as exc:
                raise WarehouseBusy(f"the warehouse owner (pid {owner['pid']}) did not answer: {exc}") from exc
        if not cfg.warehouse_path.exists():
            raise FileNotFoundError(f"no warehouse at {cfg.warehouse_path}: run `spatialvid run` or `spatialvid sink` first")
    client = connect(cfg)
    try:
        return run_readonly(client, sql, parameters)
    finally:
        client.close()
