"""HQ selection, statistics and dashboard queries at scale, on the embedded warehouse.

Generates N synthetic clips (default 1,000,000; the paper's scale is 7,000,000) with
skewed tags straight inside chDB (``INSERT ... SELECT FROM numbers()``: the point is the
queries, not Python), then times, in seconds:

- the HQ selection (``spatialvid hq``) toward the paper's 1,146 h (scaled to N);
- every statistics query (``spatialvid stats``) for the full and the HQ set;
- every dashboard panel query (target: each under 1 s);
- ingest through the real sink (embedded broker -> ClickHouseSink -> chDB) on a sample
  of ``--ingest`` clips (all four record types), as records/s.

Each time is also printed as a ratio to a baseline measured in the same run: one full
scan of ``clip_scores`` reading its clip ids and durations. Captions are short (a few words) so
that N = 7M fits in memory; their length does not change the tag queries.

    python bench/bench_hq.py [--clips 1000000] [--ingest 20000] [--merge] [--warehouse DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import datetime, timezone

import clickhouse_connect

from spatialvid.config import Config
from spatialvid.dashboard.queries import panels
from spatialvid.hq import select_hq
from spatialvid.stats import METRICS, TAGS, caption_length_sql, funnel_sql, histogram_sql, motion_direction_sql, tag_sql
from spatialvid.warehouse import init_schema, run_readonly


def _pick(values: list[tuple[str, float]], h: str) -> str:
    """SQL choosing a value by cumulative weight from a hash in [0, 1)."""
    parts, acc = [], 0.0
    for v, w in values[:-1]:
        acc += w
        parts += [f"{h} < {acc:.4f}", f"'{v}'"]
    return f"multiIf({', '.join(parts)}, '{values[-1][0]}')"


def generate(client, db: str, n: int) -> None:  # type: ignore[no-untyped-def]
    u = lambda k: f"((cityHash64(number, {k}) % 1000000) / 1e6)"  # noqa: E731
    now = "now64(3) - toIntervalSecond(number % 3600)"
    client.command(f"""INSERT INTO {db}.videos (video_id, uri, source, duration_s, fps, width, height, num_frames, codec,
        produced_at) SELECT concat('v', toString(number)), concat('/data/v', toString(number), '.mp4'), 'crawl',
        90, 30, 1280, 720, 2700, 'h264', {now} FROM numbers({n // 8})""")
    client.command(f"""INSERT INTO {db}.clips (clip_id, video_id, index, num_clips, uri, frame_start, frame_end,
        timestamp_start, timestamp_end, fps, width, height, method, produced_at)
        SELECT concat('v', toString(intDiv(number, 8)), '_', toString(number % 8)), concat('v', toString(intDiv(number, 8))),
        number % 8, 8, '', 0, 300, 0, 3 + 12 * {u(1)}, 30, 1280, 720, 'synthetic', {now} FROM numbers({n})""")
    client.command(f"""INSERT INTO {db}.clip_scores (clip_id, video_id, model_id, model_version, duration_s, num_frames,
        aesthetic, aesthetic_pass, luminance_mean, luminance_pass, ocr_ratio, ocr_pass, motion, motion_pass, passed, scored_at)
        SELECT concat('v', toString(intDiv(number, 8)), '_', toString(number % 8)) AS cid, concat('v', toString(intDiv(number, 8))),
        'synthetic', 'synthetic-1', 3 + 12 * {u(1)}, 300, 3.5 + 3 * {u(2)} AS aes, aes >= 4, 10 + 140 * {u(3)} AS lum,
        lum BETWEEN 20 AND 140, 0.2 * {u(4)} AS ocr, ocr <= 0.3, 0.5 + 15 * {u(5)} AS mot, mot BETWEEN 2 AND 14,
        aes >= 4 AND lum BETWEEN 20 AND 140 AND ocr <= 0.3 AND mot BETWEEN 2 AND 14, {now} FROM numbers({n})""")
    trend = _pick([("Dolly In", .55), ("Pan Right", .12), ("Pan Left", .1), ("Truck Left", .08), ("Truck Right", .07),
                   ("Pedestal Up", .04), ("Stay", .04)], u(6))
    client.command(f"""INSERT INTO {db}.clip_annotations (clip_id, video_id, model_id, model_version, success, num_poses,
        move_dist, dist_level, rot_angle, traj_turns, anomaly, dynamic_ratio, motion_trends, annotated_at)
        SELECT concat('v', toString(intDiv(number, 8)), '_', toString(number % 8)), concat('v', toString(intDiv(number, 8))),
        'synthetic-geo', '1', {u(7)} > 0.03, 50, 5 * pow({u(8)}, 2), toUInt8(least(4, floor(5 * pow({u(8)}, 2)))), 6 * {u(9)},
        toUInt16(floor(4 * pow({u(10)}, 3))), {u(11)} < 0.02, 0.3 * {u(12)}, [{trend}], {now}
        FROM numbers({n}) WHERE {u(13)} < 0.9""")
    tags = {
        "scene_type_first": [("Urban", .62), ("Natural Landscape", .14), ("Interior", .1), ("Rural", .06), ("Waterfront", .05), ("Unknown", .03)],
        "time_of_day": [("Daytime", .7), ("Dusk/Evening", .12), ("Night", .1), ("Dawn/Morning", .06), ("Unknown", .02)],
        "weather": [("Sunny", .55), ("Cloudy", .3), ("Rainy", .07), ("Foggy", .04), ("Snowy", .03), ("Unknown", .01)],
        "crowd_density": [("Moderate", .45), ("Sparse", .3), ("Crowded", .15), ("Deserted", .08), ("Unknown", .02)],
        "lighting": [("Bright", .8), ("Dim/Dark", .17), ("Unknown", .03)],
    }
    cols = ", ".join(tags)
    vals = ", ".join(_pick(v, u(20 + i)) for i, v in enumerate(tags.values()))
    client.command(f"""INSERT INTO {db}.clip_captions (clip_id, video_id, model_id, model_version, opt_cam_motion,
        scene_summary, shot_immersion, motion_trends, {cols}, captioned_at)
        SELECT concat('v', toString(intDiv(number, 8)), '_', toString(number % 8)), concat('v', toString(intDiv(number, 8))),
        'synthetic-vlm', '1', 'the camera moves forward', 'a street', 'walking down a street', [{trend}], {vals}, {now}
        FROM numbers({n}) WHERE {u(13)} < 0.85""")


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def ingest_rate(n_clips: int) -> tuple[float, int]:
    """Records/s through the real sink for a synthetic population (all record types)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.synthetic import population

    from spatialvid.kafka import EmbeddedBroker, RecordProducer, ensure_topics
    from spatialvid.sinks.clickhouse import ClickHouseSink

    records = population(n_clips, seed=1, t0=datetime.now(timezone.utc))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as wh:
        cfg = Config()
        cfg.kafka.bootstrap, cfg.kafka.session_timeout_ms = broker.bootstrap, 6000
        cfg.sink.batch_rows = 5000  # several batches: the first (with the group join) is not timed
        ensure_topics(cfg)
        out = RecordProducer(cfg)
        for r in records:
            out.send(r)
        out.flush()
        client = clickhouse_connect.get_client(interface="chdb", path=wh)
        init_schema(client, cfg)
        sink = ClickHouseSink(cfg, client)
        while sink.counters.consumed == 0:  # group join is not measured
            sink.poll_once()
        t = time.perf_counter()
        first = sink.counters.consumed
        while sink.counters.consumed < len(records):
            sink.poll_once()
        dt = time.perf_counter() - t
        sink.close()
        client.close()
    return (len(records) - first) / dt, len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--ingest", type=int, default=20_000, help="clips for the sink ingest measurement (0: skip)")
    ap.add_argument("--merge", action="store_true",
                    help="merge clip_latest fully before the queries (as background merges would over time)")
    ap.add_argument("--warehouse", metavar="DIR",
                    help="use (and keep) this warehouse folder; generate only when it holds no clips yet "
                         "(to time queries again on one generated population)")
    args = ap.parse_args()
    n = args.clips
    with tempfile.TemporaryDirectory() as tmp:
        client = clickhouse_connect.get_client(interface="chdb", path=args.warehouse or tmp)
        cfg = Config()
        db = cfg.warehouse.database
        init_schema(client, cfg)
        have = client.query(f"SELECT count() FROM {db}.clip_scores").result_rows[0][0]
        if have and have != n:
            raise SystemExit(f"{args.warehouse} holds {have:,} clips, not --clips {n:,}")
        if have:
            print(f"reusing {have:,} generated clips in {args.warehouse}")
        else:
            dt, _ = timed(lambda: generate(client, db, n))
            print(f"generated {n:,} clips (5 tables) in {dt:.1f} s")
        parts = client.query(f"SELECT count() FROM system.parts WHERE active AND database = '{db}' "
                             "AND table = 'clip_latest'").result_rows[0][0]
        print(f"clip_latest (per-clip latest state, kept by materialized views): {parts} active parts")
        if args.merge:
            # What a ClickHouse server's background merges do over time (chDB barely merges
            # on its own): collapse clip_latest to one row per clip, so FINAL reads need not merge.
            dt, _ = timed(lambda: client.command(f"OPTIMIZE TABLE {db}.clip_latest FINAL"))
            print(f"merged clip_latest (OPTIMIZE FINAL) in {dt:.1f} s")
        q = lambda sql, p=None: run_readonly(client, sql, p, threading.Lock())  # noqa: E731
        base, _ = timed(lambda: q(f"SELECT count(), sum(length(clip_id)), sum(duration_s) FROM {db}.clip_scores"))
        base = max(base, 1e-3)
        print(f"baseline: full scan of clip_scores (clip_id, duration_s) {base:.3f} s\n")
        rows: list[tuple[str, float]] = []
        hours = 1146.0 * n / 7_000_000  # the paper's HQ share of its 7M clips
        load, cpu = os.getloadavg()[0], time.process_time()  # chDB runs in this process: its threads count
        dt, r = timed(lambda: select_hq(client, cfg, hours=hours, seed=0))
        cpu = time.process_time() - cpu
        rows.append((f"hq selection ({r.clips:,} clips, {r.selected_hours:.0f} h of {r.candidate_hours:.0f} h)", dt))
        print(f"hq selection: {dt:.2f} s wall, {cpu:.2f} s CPU (both cores together), "
              f"{r.candidates:,} candidates; load average before it {load:.1f} on {os.cpu_count()} cores\n")
        stats_q = {"funnel": funnel_sql(db, r.table)}
        for name, table in (("full", None), ("hq", r.table)):
            stats_q[f"motion_direction[{name}]"] = motion_direction_sql(db, table)
            for t in TAGS:
                stats_q[f"tag {t}[{name}]"] = tag_sql(db, t, table)
            for m in METRICS:
                stats_q[f"histogram {m}[{name}]"] = histogram_sql(db, m, table)
            stats_q[f"caption_lengths[{name}]"] = caption_length_sql(db, table)
        for name, sql in stats_q.items():
            rows.append((f"stats: {name}", timed(lambda: q(sql))[0]))
        for name, p in panels(db, hq_table=r.table).items():
            rows.append((f"dashboard: {name}", timed(lambda: q(p.sql, p.params))[0]))
        width = max(len(a) for a, _ in rows)
        print(f"{'query':<{width}}  {'seconds':>8}  {'x scan':>7}")
        for a, t in rows:
            print(f"{a:<{width}}  {t:>8.3f}  {t / base:>7.1f}")
        dash = [t for a, t in rows if a.startswith("dashboard")]
        print(f"\ndashboard: slowest {max(dash):.3f} s (target < 1 s); HQ selection {rows[0][1]:.1f} s (target < 10 s)")
        client.close()
    if args.ingest:
        rate, total = ingest_rate(args.ingest)
        print(f"ingest through the sink: {rate:,.0f} records/s ({total:,} records of all types); "
              f"{7_000_000 * total / args.ingest / rate / 60:.0f} min for 7M clips at this rate")


if __name__ == "__main__":
    main()
