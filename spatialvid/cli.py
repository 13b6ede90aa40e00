"""The ``spatialvid`` command."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import ConfigError, load_config

EPILOG = """\
examples:
  spatialvid samples demo/                 write five sample videos (no download needed)
  spatialvid run demo/                     score them end to end on the embedded broker + warehouse
  spatialvid sql "SELECT * FROM spatialvid.pass_rates"
  spatialvid broker                        a Kafka-protocol broker for multi-process use
  SPATIALVID_KAFKA__BOOTSTRAP=host:9092 spatialvid process score   one stage worker against real Kafka

configuration: ./spatialvid.toml or --config FILE, overridden by SPATIALVID_<SECTION>__<KEY>
variables (e.g. SPATIALVID_FILTERS__MOTION_MIN=1.5). Defaults are the paper's thresholds.
"""


def _cfg(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    cfg = load_config(args.config)
    if getattr(args, "data_dir", None):
        cfg.data_dir = args.data_dir
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import format_summary, run_pipeline
    from spatialvid.producers.samples import write_samples

    cfg = _cfg(args)
    inputs = list(args.inputs)
    if args.samples or not inputs:
        folder = Path(cfg.data_dir) / "samples"
        print(f"writing sample videos to {folder} ...", file=sys.stderr)
        inputs.append(str(folder))
        write_samples(folder)
    result = run_pipeline(cfg, inputs, timeout_s=args.timeout, show_progress=not args.quiet,
                          dashboard_port=args.dashboard, until=args.until)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary, result.elapsed_s))
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from spatialvid.producers.samples import SAMPLES, write_samples

    for spec, path in zip(SAMPLES, write_samples(args.folder)):
        print(f"{path}  ({spec.seconds:g}s: {spec.expect})")
    return 0


def _need_bootstrap(cfg: Any, what: str) -> None:
    if not cfg.kafka.bootstrap:
        raise ConfigError(
            f"`spatialvid {what}` talks to a running Kafka: set kafka.bootstrap (or SPATIALVID_KAFKA__BOOTSTRAP); "
            "for a local one, start `spatialvid broker` in another terminal"
        )


def cmd_produce(args: argparse.Namespace) -> int:
    from .kafka import RecordProducer, ensure_topics
    from spatialvid.producers.local import LocalProducer

    cfg = _cfg(args)
    _need_bootstrap(cfg, "produce")
    ensure_topics(cfg)
    stats = LocalProducer(cfg, args.inputs).run(RecordProducer(cfg))
    print(f"produced {stats.videos} video records, {stats.dead_letters} dead letters to {cfg.topic('videos')}")
    return 0


def cmd_crawl(args: argparse.Namespace) -> int:
    from spatialvid.producers.crawl import CrawlProducer, SeenIndex, split_list

    cfg = _cfg(args)
    if args.file_urls:
        cfg.crawl.enable_file_urls = True
    queries = [q for q in args.query if q.strip()] if args.query is not None else ([] if args.inputs else split_list(cfg.crawl.queries))
    if args.results:
        cfg.crawl.results_per_query = args.results
    if not queries and not args.inputs:
        raise ValueError("nothing to crawl: give --query WORDS and/or URLs / @list.txt files")
    out = None
    if not args.dry_run:
        from .kafka import RecordProducer, ensure_topics

        _need_bootstrap(cfg, "crawl")
        ensure_topics(cfg)
        out = RecordProducer(cfg)
    producer = CrawlProducer(cfg, args.inputs, queries=queries, max_videos=args.max,
                             seen=SeenIndex(cfg, use_warehouse=not args.no_warehouse))
    if args.dry_run or args.verbose:
        producer.on_record = lambda r: print(  # type: ignore[method-assign]
            f"{'accept' if r.accepted else 'reject'}  {r.video_id}  {r.title[:60]!r}"
            + (f"  ({'; '.join(r.reject_reasons)})" if r.reject_reasons else ""), flush=True)
    stats = producer.run(out, dry_run=args.dry_run)
    why = ", ".join(f"{k} {n}" for k, n in sorted(stats.reasons.items(), key=lambda kv: -kv[1])) or "none"
    verb = "would download" if args.dry_run else "downloaded"
    print(f"crawl: {stats.listed} listed, {stats.skipped_seen} already seen, {stats.videos} accepted "
          f"({verb} {stats.downloaded if not args.dry_run else stats.videos}), {stats.rejected} rejected "
          f"(reasons: {why}), {stats.dead_letters} failed" + ("" if args.dry_run else f" -> {cfg.topic('videos')}"))
    for target, exc in producer.list_errors:
        print(f"crawl: could not list {target}: {exc}", file=sys.stderr)
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from .kafka import ensure_topics
    from .runtime import StageRunner, StopFlag, get_stage

    cfg = _cfg(args)
    _need_bootstrap(cfg, "process")
    stage_cls = get_stage(args.stage)
    ensure_topics(cfg)
    stop = StopFlag()
    stop.install_signal_handlers()
    counters = StageRunner(stage_cls(cfg), cfg, stop).run()
    print(counters.line(args.stage))
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    from .kafka import ensure_topics
    from .runtime import StopFlag
    from .warehouse import QueryServer, connect, init_schema
    from spatialvid.sinks.clickhouse import ClickHouseSink

    cfg = _cfg(args)
    _need_bootstrap(cfg, "sink")
    ensure_topics(cfg)
    client = connect(cfg)
    init_schema(client, cfg)
    lock = threading.Lock()
    server = None if cfg.warehouse.url else QueryServer(client, cfg, lock).start()
    stop = StopFlag()
    stop.install_signal_handlers()
    try:
        counters = ClickHouseSink(cfg, client, lock).run(stop)
    finally:
        if server:
            server.stop()
        client.close()
    print(f"sink: consumed {counters.consumed}, inserted {dict(counters.inserted)}, "
          f"duplicates skipped {counters.duplicates}, dead letters {counters.dead_letters}; "
          "writer seconds " + ", ".join(f"{k} {v:.1f}" for k, v in counters.seconds.items()))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from .warehouse import query

    cfg = _cfg(args)
    params: dict[str, Any] = {}
    for p in args.param or []:
        name, _, value = p.partition("=")
        params[name] = value
    out = query(cfg, args.query, params)
    if args.format == "json":
        print(json.dumps([dict(zip(out["columns"], r)) for r in out["rows"]], default=str, indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(out["columns"])
        w.writerows(out["rows"])
    else:
        print(_table(out["columns"], out["rows"]))
    return 0


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    fmt = lambda row: "  ".join(v.ljust(w) for v, w in zip(row, widths))  # noqa: E731
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]
    return "\n".join(lines + [f"({len(rows)} rows)"])


def cmd_schema(args: argparse.Namespace) -> int:
    from spatialvid.schemas.ddl import all_ddl
    from spatialvid.schemas.records import RECORD_TYPES

    cfg = _cfg(args)
    if args.format == "ddl":
        print(";\n\n".join(all_ddl(cfg.warehouse.database)) + ";")
    else:
        print(json.dumps({m.topic: m.model_json_schema() for m in RECORD_TYPES}, indent=2))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .warehouse import query
    from spatialvid.processors.geometry.plot import render_trajectory
    from spatialvid.sinks.release import read_clip_annotations

    target = args.target
    if not (Path(target).is_dir() or "://" in target):
        cfg = _cfg(args)
        rows = query(cfg, f"SELECT artifacts_uri FROM {cfg.warehouse.database}.clip_annotations FINAL "
                          "WHERE clip_id = {id:String} ORDER BY annotated_at DESC LIMIT 1", {"id": target})["rows"]
        if not rows or not rows[0][0]:
            raise FileNotFoundError(f"no annotation artifacts recorded for clip {target!r}")
        target = rows[0][0]
    ann = read_clip_annotations(target, masks=False)
    name = Path(target.rstrip("/")).name
    out = render_trajectory(ann.poses, ann.instructions, args.output or f"{name}_trajectory.png", title=name)
    print(out)
    return 0


def _owned_client(cfg: Any):  # type: ignore[no-untyped-def]
    """A writable warehouse client (embedded: this process becomes the owner)."""
    from .warehouse import connect, init_schema

    client = connect(cfg)
    init_schema(client, cfg)
    return client


def cmd_hq(args: argparse.Namespace) -> int:
    from .hq import format_result, select_hq

    cfg = _cfg(args)
    client = _owned_client(cfg)
    try:
        result = select_hq(client, cfg, hours=args.hours, seed=args.seed, name=args.name)
    finally:
        client.close()
    print(format_result(result))
    return 0


def _read_access(cfg: Any, serve_sql: bool = False):  # type: ignore[no-untyped-def]
    """(query function, closer): through the owner or server when there is one, else owned
    here (and, with ``serve_sql``, answering `spatialvid sql` from other processes meanwhile)."""
    from .dashboard import embedded_query, remote_query
    from .warehouse import QueryServer, _live_owner

    if cfg.warehouse.url or _live_owner(cfg.warehouse_path) is not None:
        return remote_query(cfg), lambda: None
    client, lock = _owned_client(cfg), threading.Lock()
    server = QueryServer(client, cfg, lock).start() if serve_sql else None

    def close() -> None:
        if server:
            server.stop()
        client.close()

    return embedded_query(client, lock), close


def cmd_stats(args: argparse.Namespace) -> int:
    from .stats import write_report

    cfg = _cfg(args)
    db = cfg.warehouse.database
    query, close = _read_access(cfg)
    try:
        hq = args.hq or f"{db}.hq_{cfg.hq.name}"
        exists = query("SELECT count() FROM system.tables WHERE database = {d:String} AND name = {n:String}",
                       {"d": hq.split(".")[0] if "." in hq else db, "n": hq.split(".")[-1]})["rows"][0][0]
        compare = dict(c.split("=", 1) if "=" in c else (c.split(".")[-1], c) for c in args.compare or [])
        rep, files = write_report(query, db, args.out, hq_table=hq if int(exists) else None, compare=compare)
    finally:
        close()
    print("funnel: " + "  ->  ".join(f"{s} {h:.2f} h" for s, _, h in rep.funnel))
    if not int(exists):
        print(f"(no HQ selection {hq} yet: run `spatialvid hq --hours H` to add the HQ set)")
    print(f"report: {files['html']}  ({len(files) - 3} plots, {files['markdown'].name}, {files['json'].name})")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import DashboardServer
    from .runtime import StopFlag

    cfg = _cfg(args)
    query, close = _read_access(cfg, serve_sql=True)
    dash = DashboardServer(query, cfg, host=args.host, port=args.port).start()
    print(f"dashboard on {dash.url} (Ctrl-C stops it)", flush=True)
    stop = StopFlag()
    stop.install_signal_handlers()
    try:
        while not stop.is_set():
            threading.Event().wait(0.5)
    finally:
        dash.stop()
        close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from spatialvid.sinks.export import export, verify_export

    cfg = _cfg(args)
    if args.verify:
        problems = verify_export(args.out)
        print("\n".join(problems) if problems else f"{args.out}: every file matches its checksum")
        return 1 if problems else 0
    query, close = _read_access(cfg)
    try:
        from tqdm import tqdm

        res = export(query, cfg, args.out, table=args.table, group_size=args.group_size, videos=not args.no_videos,
                     parquet=not args.no_parquet,
                     progress=lambda it, n: tqdm(it, total=n, desc="export", unit="clip", disable=args.quiet))
    finally:
        close()
    print(f"export: {res.clips} clips -> {res.out_dir} ({res.written} files written, {res.skipped} already there, "
          f"{res.bytes_written / 1e6:.1f} MB); metadata.csv, metadata.parquet, manifest.json")
    for m in res.missing[:10]:
        print(f"  missing: {m}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import describe, fetch, list_models, model_status

    cfg = _cfg(args)
    wd = args.weights_dir or cfg.scoring.weights_dir
    if args.action == "fetch":
        if not args.name:
            raise ValueError("which model? `spatialvid models fetch NAME` (names: `spatialvid models`)")
        for path in fetch(args.name, wd, progress=None if args.quiet else _download_progress()):
            print(path)
        return 0
    specs = list_models(args.task)
    if args.json:
        print(json.dumps([{"name": s.name, "task": s.task, "version": s.version, "device": s.device,
                           "proxy_for": s.proxy_for, "license": s.weights.license,
                           "ready": st.ready, "missing": st.problems(wd)}
                          for s in specs for st in [model_status(s.name, wd, cfg)]], indent=2))
    else:
        print(describe(specs, wd, cfg))
    return 0


def _download_progress():  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(name: str, done: int, total: int) -> None:
        bar = bars.get(name) or bars.setdefault(name, tqdm(total=total or None, unit="B", unit_scale=True, desc=name))
        bar.update(done - bar.n)

    return update


def cmd_broker(args: argparse.Namespace) -> int:
    from .kafka import EmbeddedBroker
    from .runtime import StopFlag

    stop = StopFlag()
    stop.install_signal_handlers()
    with EmbeddedBroker(port=args.port) as broker:
        print(f"Kafka-protocol broker (tansu, in memory) listening on {broker.bootstrap}")
        print(f"use it with: export SPATIALVID_KAFKA__BOOTSTRAP={broker.bootstrap}   (Ctrl-C stops it; data is lost)")
        sys.stdout.flush()
        while not stop.is_set():
            threading.Event().wait(0.5)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spatialvid",
        description="SpatialVID Stream: grow a SpatialVID-style video dataset continuously. Videos and clips "
        "flow through Kafka topics, stages score them, and every result lands in ClickHouse.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"spatialvid {__version__}")
    p.add_argument("--config", help="TOML configuration file (default: ./spatialvid.toml if present)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what every component does")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the whole pipeline here (embedded broker and warehouse by default)",
                       description="Probe the input videos, split them into clips, score every clip, annotate the "
                       "camera geometry of the clips that pass, caption them, and store everything in the warehouse; "
                       "shows progress per stage and ends with a summary. With no inputs (or --samples) it makes and "
                       "uses the sample videos.")
    r.add_argument("inputs", nargs="*", help="video files, folders, @list.txt files, or http(s)/file URLs")
    r.add_argument("--samples", action="store_true", help="also process the generated sample videos")
    r.add_argument("--data-dir", help="where the warehouse, artifacts and logs live (default: ./spatialvid-data)")
    r.add_argument("--timeout", type=float, help="give up after this many seconds")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.add_argument("--dashboard", type=int, metavar="PORT", help="serve the live dashboard on this port while it runs")
    r.add_argument("--until", choices=("split", "score", "annotate", "caption"), default="caption",
                   help="last stage to run (default: caption, the whole pipeline; `score` skips the slow "
                   "geometry on a CPU machine)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("samples", help="write the sample videos into a folder",
                       description="Render five short 720p sample videos (no download): four flat pans (one "
                       "that passes the filters, one too dark, one static, one too fast) and a handheld walk through "
                       "a rendered 3-D room, which also gets camera poses.")
    s.add_argument("folder")
    s.set_defaults(func=cmd_samples)

    pr = sub.add_parser("produce", help="probe videos and emit video records to Kafka (needs kafka.bootstrap)")
    pr.add_argument("inputs", nargs="+", help="video files, folders, @list.txt files, or http(s)/file URLs")
    pr.set_defaults(func=cmd_produce)

    cr = sub.add_parser(
        "crawl", help="find videos with yt-dlp, pre-filter, download, emit video records (needs kafka.bootstrap)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search and list videos with yt-dlp, reject unsuitable ones on metadata before any download "
        "(title keywords, duration, resolution >= 720p, aspect ratio, live streams, shorts), download the rest "
        "into the artifact store (resumable) and emit one video record per source to the videos topic. A source "
        "already recorded (in the warehouse or this data folder's ledger) is never fetched again. Rejected "
        "sources are recorded too (accepted = false, with reasons), so pass rates are a query away. Settings: "
        "the [crawl] section of the configuration.",
        epilog="""examples:
  spatialvid crawl --dry-run --query "city walk" --results 10     what would be accepted, no download
  spatialvid crawl                                                the configured queries (walk, tour, drone)
  spatialvid crawl --query drone https://www.youtube.com/@somechannel/videos @more_urls.txt
  spatialvid sql "SELECT accepted, count() FROM spatialvid.videos WHERE source = 'crawl' GROUP BY accepted"
""")
    cr.add_argument("inputs", nargs="*", help="channel, playlist, feed, page or video URLs, or @list.txt files")
    cr.add_argument("-q", "--query", action="append", metavar="WORDS",
                    help="a keyword search (repeatable); default: crawl.queries when no URL is given")
    cr.add_argument("-n", "--results", type=int, help="results per search (default: crawl.results_per_query)")
    cr.add_argument("--max", type=int, help="stop after this many new sources (accepted + rejected)")
    cr.add_argument("--dry-run", action="store_true", help="list and pre-filter only: no download, no Kafka")
    cr.add_argument("--no-warehouse", action="store_true",
                    help="dedup with this data folder's ledger only (no warehouse reachable)")
    cr.add_argument("--file-urls", action="store_true", help="allow file:// URLs (yt-dlp's --enable-file-urls)")
    cr.add_argument("--data-dir", help="where the artifact store (downloads, ledger) and warehouse live")
    cr.set_defaults(func=cmd_crawl)

    pc = sub.add_parser("process", help="run one stage worker against Kafka (needs kafka.bootstrap)",
                        description="Run one worker of a stage's consumer group; start more workers to scale "
                        "(up to the topic's partition count). SIGTERM/Ctrl-C finishes the batch in hand and stops.")
    pc.add_argument("stage", help="stage name: split, score, annotate, caption")
    pc.set_defaults(func=cmd_process)

    sk = sub.add_parser("sink", help="write every topic into ClickHouse (needs kafka.bootstrap)",
                        description="Consume all record topics and insert them into the warehouse; in embedded "
                        "mode this process owns the warehouse and answers `spatialvid sql` for others.")
    sk.add_argument("--data-dir", help="where the embedded warehouse lives")
    sk.set_defaults(func=cmd_sink)

    q = sub.add_parser("sql", help="run a read-only SQL query on the warehouse",
                       description="Run one read-only query (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN). Goes through "
                       "the process that owns the embedded warehouse when one is running. Bind values with "
                       "--param name=value and {name:Type} in the query.")
    q.add_argument("query")
    q.add_argument("--param", action="append", help="query parameter name=value (repeatable)")
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    q.add_argument("--data-dir", help="where the embedded warehouse lives")
    q.set_defaults(func=cmd_sql)

    sc = sub.add_parser("schema", help="print the record JSON Schemas or the warehouse DDL")
    sc.add_argument("--format", choices=("json", "ddl"), default="json")
    sc.set_defaults(func=cmd_schema)

    sh = sub.add_parser("show", help="render a clip's camera trajectory to a PNG",
                        description="Top and side views of the camera path, coloured by time, with the motion "
                        "instruction ranges. TARGET is a clip id (looked up in the warehouse) or an annotation "
                        "folder of the release layout (poses.npy, instructions.json).")
    sh.add_argument("target", help="clip id or annotation folder / URL")
    sh.add_argument("-o", "--output", help="PNG path (default: <clip>_trajectory.png)")
    sh.add_argument("--data-dir", help="where the embedded warehouse lives")
    sh.set_defaults(func=cmd_show)

    hq = sub.add_parser("hq", help="select the balanced HQ subset into a named, versioned table",
                        description="Keep clips that meet the raised [hq] thresholds and have an annotation, then "
                        "sample them deterministically (seeded hash) with per-value quotas so that scene type, time "
                        "of day, weather, crowd, lighting, motion trend, trajTurns and distLevel are as even as the "
                        "data allows, up to --hours. Writes <db>.hq_NAME_vN (a new version each run) and the view "
                        "<db>.hq_NAME, and prints the distributions before and after with their evenness "
                        "(normalised entropy, 1 = perfectly even). Needs the warehouse to itself (stop "
                        "`spatialvid run`/`sink` first in embedded mode).")
    hq.add_argument("--hours", type=float, help="target hours (default: hq.hours, the paper's 1146)")
    hq.add_argument("--seed", type=int, help="sampling seed (default: hq.seed); same seed + data = same subset")
    hq.add_argument("--name", help="selection name (default: hq.name, 'hq')")
    hq.add_argument("--data-dir", help="where the embedded warehouse lives")
    hq.set_defaults(func=cmd_hq)

    st = sub.add_parser("stats", help="the paper's statistics: PNG plots and a Markdown/HTML report",
                        description="Funnel from crawled to HQ hours, motion-direction and tag distributions, "
                        "histograms of aesthetic, luminance, motion, rotAngle, moveDist and trajTurns for the full "
                        "set, the HQ set and any comparison sets, and caption lengths; written to --out.")
    st.add_argument("--out", default="spatialvid-stats", help="output folder (default: ./spatialvid-stats)")
    st.add_argument("--hq", help="HQ table (default: <db>.hq_<hq.name>, the latest selection)")
    st.add_argument("--compare", action="append", metavar="[LABEL=]TABLE",
                    help="another set of clips (any table with clip_id), e.g. old=spatialvid.hq_hq_v1 (repeatable)")
    st.add_argument("--data-dir", help="where the embedded warehouse lives")
    st.set_defaults(func=cmd_stats)

    da = sub.add_parser("dashboard", help="serve the live dashboard (pass rates, funnel, throughput, lag, clips)",
                        description="A web page that refreshes every dashboard.refresh_s seconds. Next to a running "
                        "`spatialvid run`/`sink` it reads through that process; with warehouse.url set it reads "
                        "the ClickHouse server; otherwise it opens the embedded warehouse itself. Read-only. "
                        "`spatialvid run --dashboard PORT` serves the same page from the pipeline process.")
    da.add_argument("--port", type=int, help="port (default: dashboard.port, 8765; 0 picks a free one)")
    da.add_argument("--host", help="interface (default: dashboard.host, 127.0.0.1)")
    da.add_argument("--data-dir", help="where the embedded warehouse lives")
    da.set_defaults(func=cmd_dashboard)

    ex = sub.add_parser("export", help="export a selection to the released layout + Parquet (HQ by default)",
                        description="Write videos/group_XXXX/{id}.mp4, annotations/group_XXXX/{id}/..., "
                        "depths/group_XXXX/{id}.zip, metadata.csv (released column names), metadata.parquet and a "
                        "checksummed manifest. Run it again to resume: finished files are skipped.")
    ex.add_argument("out", help="output folder")
    ex.add_argument("--table", help="any table/view with clip_id (default: <db>.hq_<hq.name>)")
    ex.add_argument("--group-size", type=int, default=1000, help="clips per group_XXXX folder (default 1000)")
    ex.add_argument("--no-videos", action="store_true", help="metadata and annotations only")
    ex.add_argument("--no-parquet", action="store_true", help="skip metadata.parquet")
    ex.add_argument("--verify", action="store_true", help="only check an existing export against its manifest")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ex.add_argument("--data-dir", help="where the embedded warehouse lives")
    ex.set_defaults(func=cmd_export)

    mo = sub.add_parser("models", help="list the model backends and whether their files are here; fetch weights",
                        description="Every model is a named backend in one registry. `spatialvid models` lists them "
                        "with their version, device, license and, when a file is missing, how to get it. "
                        "`spatialvid models fetch NAME` downloads the official files into the weights folder "
                        "(scoring.weights_dir, default ~/.cache/spatialvid/models); it needs internet.")
    mo.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    mo.add_argument("name", nargs="?", help="model name (for fetch)")
    mo.add_argument("--task", help="only this task (aesthetic, ocr, ...)")
    mo.add_argument("--weights-dir", help="weights folder (default: scoring.weights_dir)")
    mo.add_argument("--json", action="store_true", help="print the list as JSON")
    mo.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")
    mo.set_defaults(func=cmd_models)

    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker in the foreground")
    b.add_argument("--port", type=int, default=9092)
    b.set_defaults(func=cmd_broker)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "process" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"spatialvid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
