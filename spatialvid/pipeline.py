"""``spatialvid run``: the whole pipeline on one machine, with progress and a summary.

This process starts the embedded broker (unless ``kafka.bootstrap`` is set), owns the
warehouse (runs the sink and serves read-only queries), starts one worker process per
stage, produces the input videos, and follows progress in ClickHouse, the source of
truth for what is done: a video is done when its clips (or its dead letter) are
stored, a clip when its score row (or its dead letter) is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from .config import Config
from .kafka import EmbeddedBroker, RecordProducer, ensure_topics
from .warehouse import QueryServer, connect, init_schema
from spatialvid.producers.base import ProduceStats
from spatialvid.producers.local import LocalProducer
from spatialvid.sinks.clickhouse import ClickHouseSink

log = logging.getLogger(__name__)

#: The stages of a run, in order; ``run_pipeline(until=...)`` stops after one of them.
PIPELINE_STAGES = ("split", "score", "annotate", "caption")


@contextlib.contextmanager
def kafka_service(cfg: Config) -> Iterator[EmbeddedBroker | None]:
    """Start the embedded broker when no bootstrap address is configured."""
    if cfg.kafka.bootstrap:
        yield None
        return
    logs = Path(cfg.data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=logs / "broker.log") as broker:
        cfg.kafka.bootstrap = broker.bootstrap
        try:
            yield broker
        finally:
            cfg.kafka.bootstrap = ""


def spawn_stage(cfg: Config, stage: str, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start ``spatialvid process STAGE`` as a child process with this configuration."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"{stage}.log", "ab")
    env = {**os.environ, **cfg.to_env()}
    return subprocess.Popen([sys.executable, "-m", "spatialvid.cli", "process", stage], env=env, stdout=out, stderr=out)


@dataclass
class Progress:
    videos_done: int = 0
    clips_total: int = 0
    clips_arrived: int = 0
    clips_done: int = 0
    clips_passed: int = 0  # to annotate
    annotated: int = 0  # annotation rows or annotate dead letters
    annotated_ok: int = 0  # to caption
    captioned: int = 0  # caption rows or caption dead letters

    def finished(self, videos: int, stages: Sequence[str]) -> bool:
        done = self.videos_done >= videos and self.clips_arrived >= self.clips_total
        if "score" in stages:
            done = done and self.clips_done >= self.clips_total
        if "annotate" in stages:
            done = done and self.annotated >= self.clips_passed
        if "caption" in stages:
            done = done and self.captioned >= self.annotated_ok
        return done


def _clips_done_sql(table: str, stage: str) -> str:
    """Clips of the run that ``stage`` has finished: a row in ``table`` or a dead letter."""
    return (f"(SELECT uniqExact(clip_id) FROM {{db}}.{table} WHERE video_id IN {{{{ids:Array(String)}}}})"
            f" + (SELECT uniqExact(source_key) FROM {{db}}.deadletters WHERE stage = '{stage}' AND source_key IN "
            f"(SELECT clip_id FROM {{db}}.clips WHERE video_id IN {{{{ids:Array(String)}}}}) AND source_key NOT IN "
            f"(SELECT clip_id FROM {{db}}.{table} WHERE video_id IN {{{{ids:Array(String)}}}}))")


PROGRESS_SQL = f"""
SELECT
    (SELECT uniqExact(video_id) FROM {{db}}.clips WHERE video_id IN {{{{ids:Array(String)}}}})
  + (SELECT uniqExact(source_key) FROM {{db}}.deadletters
     WHERE source_key IN {{{{ids:Array(String)}}}} AND source_key NOT IN
           (SELECT video_id FROM {{db}}.clips WHERE video_id IN {{{{ids:Array(String)}}}})) AS videos_done,
    (SELECT sum(n) FROM (SELECT any(num_clips) AS n FROM {{db}}.clips
     WHERE video_id IN {{{{ids:Array(String)}}}} GROUP BY video_id)) AS clips_total,
    (SELECT uniqExact(clip_id) FROM {{db}}.clips WHERE video_id IN {{{{ids:Array(String)}}}}) AS clips_arrived,
    {_clips_done_sql("clip_scores", "score")} AS clips_done,
    (SELECT countIf(passed) FROM {{db}}.clip_scores_latest WHERE video_id IN {{{{ids:Array(String)}}}}) AS clips_passed,
    {_clips_done_sql("clip_annotations", "annotate")} AS annotated,
    (SELECT uniqExactIf(clip_id, success) FROM {{db}}.clip_annotations WHERE video_id IN {{{{ids:Array(String)}}}}) AS annotated_ok,
    {_clips_done_sql("clip_captions", "caption")} AS captioned
"""


def read_progress(client: Any, cfg: Config, video_ids: Sequence[str]) -> Progress:
    row = client.query(PROGRESS_SQL.format(db=cfg.warehouse.database), parameters={"ids": list(video_ids)}).result_rows[0]
    return Progress(*(int(v or 0) for v in row))


@dataclass
class RunResult:
    produced: ProduceStats
    progress: Progress
    elapsed_s: float
    summary: dict[str, Any] = field(default_factory=dict)


def run_pipeline(cfg: Config, inputs: Sequence[str], timeout_s: float | None = None, show_progress: bool = True,
                 dashboard_port: int | None = None, until: str = "caption") -> RunResult:
    """Run produce -> split -> score -> annotate -> caption -> sink until every input
    video is accounted for at the last stage (``until``).

    ``dashboard_port``: also serve the live dashboard from this process (0: a free port).
    """
    stages = PIPELINE_STAGES[: PIPELINE_STAGES.index(until) + 1]
    t0 = time.monotonic()
    log_dir = Path(cfg.data_dir) / "logs"
    with kafka_service(cfg):
        ensure_topics(cfg)
        client = connect(cfg)
        lock = threading.Lock()
        init_schema(client, cfg)
        server = QueryServer(client, cfg, lock).start() if not cfg.warehouse.url else None
        dashboard = _start_dashboard(client, cfg, lock, dashboard_port) if dashboard_port is not None else None
        workers = [spawn_stage(cfg, s, log_dir) for s in stages]
        sink = ClickHouseSink(cfg, client, lock)
        bars = {
            name: tqdm(total=0, desc=desc, unit=unit, disable=not show_progress, dynamic_ncols=True, position=i)
            for i, (name, desc, unit) in enumerate(
                [("produce", "probe   ", "video"), ("split", "split   ", "video"), ("score", "score   ", "clip"),
                 ("annotate", "annotate", "clip"), ("caption", "caption ", "clip")][: len(stages) + 1])
        }
        produced: dict[str, ProduceStats] = {}

        def produce() -> None:
            producer = LocalProducer(cfg, inputs)
            cands = list(producer.candidates())
            bars["produce"].total = bars["split"].total = len(cands)
            bars["produce"].refresh()
            produced["stats"] = producer.run(RecordProducer(cfg), on_item=lambda: bars["produce"].update(),
                                             candidates=cands)

        thread = threading.Thread(target=produce, name="produce", daemon=True)
        thread.start()
        progress = Progress()
        try:
            while True:
                sink.poll_once()
                for w, name in zip(workers, stages):
                    if w.poll() is not None:
                        raise RuntimeError(f"stage {name} exited with code {w.returncode}; see {log_dir / (name + '.log')}")
                if "stats" in produced:
                    stats = produced["stats"]
                    ids = stats.video_ids
                    progress = read_progress(client, cfg, ids) if ids else Progress()
                    _advance(bars["split"], progress.videos_done + stats.dead_letters)
                    for name, total, done in (("score", progress.clips_total, progress.clips_done),
                                              ("annotate", progress.clips_passed, progress.annotated),
                                              ("caption", progress.annotated_ok, progress.captioned)):
                        if name in bars:
                            bars[name].total = total
                            _advance(bars[name], done)
                    if progress.finished(len(ids), stages):
                        break
                elif not thread.is_alive():
                    raise RuntimeError("the producer failed; see the log above")
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"pipeline did not finish within {timeout_s}s (progress: {progress})")
            summary = summarize(client, cfg, produced["stats"])
        finally:
            for bar in bars.values():
                bar.close()
            for w in workers:
                w.terminate()
            for w in workers:
                try:
                    w.wait(20)
                except subprocess.TimeoutExpired:
                    w.kill()
            sink.close()
            if server:
                server.stop()
            if dashboard:
                dashboard.stop()
            client.close()
    return RunResult(produced=produced["stats"], progress=progress, elapsed_s=time.monotonic() - t0, summary=summary)


def _start_dashboard(client: Any, cfg: Config, lock: threading.Lock, port: int) -> Any:
    from .dashboard import DashboardServer, embedded_query

    dash = DashboardServer(embedded_query(client, lock), cfg, port=port).start()
    print(f"dashboard on {dash.url}", file=sys.stderr, flush=True)
    return dash


def _advance(bar: tqdm, value: int) -> None:
    if value > bar.n:
        bar.update(value - bar.n)


FILTERS = ("aesthetic", "luminance", "ocr", "motion")


def summarize(client: Any, cfg: Config, stats: ProduceStats) -> dict[str, Any]:
    """The numbers a person wants after a run, straight from the warehouse."""
    db, ids = cfg.warehouse.database, {"ids": stats.video_ids}

    def one(sql: str) -> list[Any]:
        return list(client.query(sql.format(db=db), parameters=ids).result_rows)

    clips, clip_s = one("SELECT count(), sum(timestamp_end - timestamp_start) FROM {db}.clips FINAL "
                        "WHERE video_id IN {{ids:Array(String)}}")[0]
    filters = []
    for f in FILTERS:
        col = f"{f}_pass"
        # which model scored each filter (the names the pass_rates view uses)
        model = {"aesthetic": "aesthetic_model", "ocr": "ocr_model", "luminance": "'luminance-bt709'",
                 "motion": "'vmaf-motion'"}.get(f, "model_version")
        for passed, total, models in one(
            f"SELECT countIf({col}), count({col}), arrayStringConcat(groupUniqArray({model}), ', ') "
            "FROM {db}.clip_scores_latest WHERE video_id IN {{ids:Array(String)}}"
        ):
            if total:
                filters.append({"filter": f, "passed": passed, "total": total, "model": models})
    passed_all, scored, kept_s = one(
        "SELECT countIf(passed), count(), sumIf(duration_s, passed) FROM {db}.clip_scores_latest "
        "WHERE video_id IN {{ids:Array(String)}}")[0]
    dead = one(
        "SELECT stage, error_class, count(), any(error_message) FROM {db}.deadletters FINAL "
        "WHERE source_key IN {{ids:Array(String)}} OR source_key IN "
        "(SELECT clip_id FROM {db}.clips WHERE video_id IN {{ids:Array(String)}}) "
        "GROUP BY stage, error_class ORDER BY count() DESC")
    annotated, annotated_ok, ann_models = one(
        "SELECT count(), countIf(success), arrayStringConcat(groupUniqArray(model_version), ', ') "
        "FROM {db}.clip_annotations FINAL WHERE video_id IN {{ids:Array(String)}}")[0]
    ann_failures = [{"reason": r, "count": int(n)} for r, n in one(
        "SELECT splitByChar(':', failure_reason)[1] AS reason, count() FROM {db}.clip_annotations FINAL "
        "WHERE video_id IN {{ids:Array(String)}} AND NOT success GROUP BY reason ORDER BY count() DESC")]
    captions = [{"mode": m, "count": int(n), "llm": llm} for m, n, llm in one(
        "SELECT caption_mode, count(), arrayStringConcat(groupUniqArray(llm), ', ') FROM {db}.clip_captions FINAL "
        "WHERE video_id IN {{ids:Array(String)}} GROUP BY caption_mode ORDER BY caption_mode")]
    return {
        "videos": len(stats.video_ids), "videos_rejected_at_probe": stats.dead_letters,
        "clips": int(clips), "clip_hours": float(clip_s or 0) / 3600, "scored": int(scored),
        "passed_all": int(passed_all), "kept_hours": float(kept_s or 0) / 3600, "filters": filters,
        "annotated": int(annotated), "annotated_ok": int(annotated_ok), "annotation_models": ann_models,
        "annotation_failures": ann_failures,
        "captions": captions,
        "dead_letters": [{"stage": a, "error_class": b, "count": int(c), "example": d} for a, b, c, d in dead],
        "warehouse": cfg.warehouse.url or str(cfg.warehouse_path), "database": db,
        "logs": str(Path(cfg.data_dir) / "logs"),
    }


def format_summary(s: dict[str, Any], elapsed_s: float) -> str:
    """The run summary as text for a person."""
    lines = [
        f"SpatialVID run finished in {elapsed_s:.1f}s",
        f"  videos   {s['videos']} probed, {s['videos_rejected_at_probe']} rejected at probe",
        f"  clips    {s['clips']} ({s['clip_hours'] * 60:.1f} min of video), {s['scored']} scored",
        f"  kept     {s['passed_all']} of {s['scored']} clips pass every filter ({s['kept_hours'] * 60:.1f} min)",
        "",
        f"  {'filter':<10} {'passed':>7} {'total':>6} {'rate':>7}  model",
    ]
    for f in s["filters"]:
        rate = f["passed"] / f["total"] if f["total"] else 0.0
        proxy = "  (offline proxy, not the paper's model)" if "proxy" in f["model"] else ""
        lines.append(f"  {f['filter']:<10} {f['passed']:>7} {f['total']:>6} {rate:>7.1%}  {f['model']}{proxy}")
    not_run = [f for f in FILTERS if f not in {x['filter'] for x in s["filters"]}]
    if not_run:
        lines.append(f"  (not run in this configuration: {', '.join(not_run)})")
    lines.append("")
    if s["annotated"]:
        lines.append(f"  geometry {s['annotated_ok']} of {s['annotated']} kept clips annotated successfully "
                     f"({s['annotation_models']})")
        for f in s["annotation_failures"]:
            lines.append(f"           {f['count']} x not annotated: {f['reason']}")
    for c in s["captions"]:
        what = ("offline: camera-motion text from the geometry; scene fields not generated "
                "(set [caption] endpoints for a vision/language model)") if c["mode"] == "offline" else c["llm"]
        lines.append(f"  captions {c['count']} {c['mode']} ({what})")
    if s["annotated"] or s["captions"]:
        lines.append("")
    if s["dead_letters"]:
        lines.append("  dead letters (input that could not be processed, with the reason):")
        for d in s["dead_letters"]:
            lines.append(f"    {d['count']:>4} x {d['stage']}/{d['error_class']}: {d['example'][:110]}")
    else:
        lines.append("  dead letters: none")
    lines += [
        "",
        f"  warehouse  {s['warehouse']} (database {s['database']})",
        f"  logs       {s['logs']}",
        '  try        spatialvid sql "SELECT filter, pass_rate FROM ' + s["database"] + '.pass_rates"',
    ]
    return "\n".join(lines)
