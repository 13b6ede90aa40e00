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
  spatialvid samples demo/                 write four sample videos (no download needed)
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
    result = run_pipeline(cfg, inputs, timeout_s=args.timeout, show_progress=not args.quiet)
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
          f"duplicates skipped {counters.duplicates}, dead letters {counters.dead_letters}")
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
                       description="Probe the input videos, split them into clips, score every clip and store "
                       "everything in the warehouse; shows progress per stage and ends with a summary. With no "
                       "inputs (or --samples) it makes and uses the sample videos.")
    r.add_argument("inputs", nargs="*", help="video files, folders, @list.txt files, or http(s)/file URLs")
    r.add_argument("--samples", action="store_true", help="also process the generated sample videos")
    r.add_argument("--data-dir", help="where the warehouse, artifacts and logs live (default: ./spatialvid-data)")
    r.add_argument("--timeout", type=float, help="give up after this many seconds")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("samples", help="write the sample videos into a folder",
                       description="Render four short 720p sample videos (no download): one that passes the "
                       "filters, one too dark, one static, one too fast.")
    s.add_argument("folder")
    s.set_defaults(func=cmd_samples)

    pr = sub.add_parser("produce", help="probe videos and emit video records to Kafka (needs kafka.bootstrap)")
    pr.add_argument("inputs", nargs="+", help="video files, folders, @list.txt files, or http(s)/file URLs")
    pr.set_defaults(func=cmd_produce)

    pc = sub.add_parser("process", help="run one stage worker against Kafka (needs kafka.bootstrap)",
                        description="Run one worker of a stage's consumer group; start more workers to scale "
                        "(up to the topic's partition count). SIGTERM/Ctrl-C finishes the batch in hand and stops.")
    pc.add_argument("stage", help="stage name: split, score")
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
