"""Sink throughput: Kafka -> ClickHouse records/s, as a ratio to a bare consume.

Both read the same topic from the same embedded broker in the same run: the bare
consumer only fetches the messages; the sink also validates every record, removes
duplicates against the table and inserts into chDB. Target (issue 2): ratio >= 0.5
and >= 30,000 records/s on a 2-core machine.

Also printed: where the sink's writer spends its time per record (validate, lookup,
insert, commit), and the warehouse's own insert rate for the same rows (copied inside
chDB, no Kafka, no JSON, no Python per row), with the views the dashboards need and with
the bare table: the ceiling any sink on this warehouse can reach.

    python bench/bench_sink.py [--records 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer

from spatialvid.config import Config
from spatialvid.kafka import EmbeddedBroker, RecordProducer, consumer_conf, ensure_topics
from spatialvid.schemas.ddl import all_ddl
from spatialvid.schemas.records import ScoreRecord
from spatialvid.sinks.clickhouse import ClickHouseSink
from spatialvid.warehouse import init_schema


class Clock:
    """Starts when the consumer group hands out partitions: the join is not measured."""

    t0: float | None = None

    def on_assign(self, consumer: Consumer, partitions: list) -> None:  # type: ignore[type-arg]
        self.t0 = self.t0 or time.perf_counter()


def bare_consume(cfg: Config, n: int) -> float:
    c = Consumer(consumer_conf(cfg, "bench-bare", **{"fetch.max.bytes": 64 << 20}))
    clock = Clock()
    c.subscribe([cfg.topic("scores")], on_assign=clock.on_assign)
    got = 0
    while got < n:
        msgs = c.consume(10000, timeout=1.0)
        got += sum(1 for m in msgs if m.error() is None)
    dt = time.perf_counter() - clock.t0
    c.close()
    return n / dt


def sink_consume(cfg: Config, client: Client, n: int) -> tuple[float, int, dict[str, float]]:
    init_schema(client, cfg)
    sink = ClickHouseSink(cfg, client, topics=("scores",))
    clock = Clock()
    sink._consumer.subscribe([cfg.topic("scores")], on_assign=clock.on_assign)
    while sink.counters.consumed < n:
        sink.poll_once()
    dt = time.perf_counter() - clock.t0
    rows = int(client.query(f"SELECT count() FROM {cfg.warehouse.database}.clip_scores").result_rows[0][0])
    phases = dict(sink.counters.seconds)
    sink.close()
    return n / dt, rows, phases


#: what each floor database holds besides the record tables
FLOORS = {"all views": lambda stmt: True,
          "pass-rate view only": lambda stmt: "clip_latest" not in stmt,
          "table only": lambda stmt: "VIEW" not in stmt and "clip_latest" not in stmt}


def warehouse_floor(client: Client, source: str, n: int, batch: int, floor: str) -> float:
    """Rows/s of the warehouse alone: the rows the sink stored, already parsed, copied from a
    Memory table into a fresh ``clip_scores`` in the sink's batch size (no Kafka, no JSON,
    no Python per row). No sink can insert faster than this, whatever its input format."""
    db = "floor_" + floor.replace(" ", "_").replace("-", "_")
    for stmt in filter(FLOORS[floor], all_ddl(db)):
        client.command(stmt)
    client.command(f"CREATE TABLE {db}.staged AS {db}.clip_scores ENGINE = Memory")
    client.command(f"INSERT INTO {db}.staged SELECT * FROM {source}.clip_scores")
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        client.command(f"INSERT INTO {db}.clip_scores SELECT * FROM {db}.staged LIMIT {batch} OFFSET {lo}")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    n = args.records
    with EmbeddedBroker() as broker:
        cfg = Config()
        cfg.kafka.bootstrap = broker.bootstrap
        cfg.kafka.session_timeout_ms = 6000
        ensure_topics(cfg, ["scores", "deadletter"])
        out = RecordProducer(cfg)
        t0 = time.perf_counter()
        for i in range(n):
            out.send(ScoreRecord(clip_id=f"video{i // 10:07d}_{i % 10}", video_id=f"video{i // 10:07d}",
                                 model_id="luminance+vmaf-motion", model_version="bench", duration_s=10.0,
                                 num_frames=240, luminance_mean=80.0 + i % 50, luminance_min=60.0,
                                 luminance_max=100.0, luminance_pass=True, motion=3.0 + (i % 7),
                                 motion_pass=True, passed=True))
        out.flush()
        produce_s = time.perf_counter() - t0
        bare = bare_consume(cfg, n)
        with tempfile.TemporaryDirectory() as wh:
            client = clickhouse_connect.get_client(interface="chdb", path=wh)
            sink, rows, phases = sink_consume(cfg, client, n)
            floors = {f: warehouse_floor(client, cfg.warehouse.database, n, cfg.sink.batch_rows, f) for f in FLOORS}
            client.close()
    assert rows == n, f"sink stored {rows} rows for {n} records"
    print(f"records: {n:,} score records (produced in {produce_s:.1f}s)")
    print(f"bare consume : {bare:>10,.0f} records/s")
    print(f"sink -> chDB : {sink:>10,.0f} records/s  (validate + dedup + insert; {rows:,} rows stored)")
    print("sink writer, microseconds per record: " + ", ".join(f"{k} {v / n * 1e6:.1f}" for k, v in phases.items()))
    print("warehouse alone (same rows, copied inside chDB): " + ", ".join(
        f"{f} {rate:,.0f} rows/s ({rate / bare:.2f} of bare consume)" for f, rate in floors.items()))
    print(f"ratio sink/bare: {sink / bare:.2f}   (target >= 0.5 and >= 30,000 records/s: "
          f"{'met' if sink / bare >= 0.5 and sink >= 30000 else 'NOT met'})")


if __name__ == "__main__":
    main()
