"""Stage runtime throughput: our confluent-kafka StageRunner vs a faust-streaming agent.

DESIGN.md suggests faust for the processor stages; this measures the choice. Both
run the same trivial stage (validate a clip record, emit a score record) over the same
pre-produced topic on the embedded broker, with micro-batches of the same size, in the
same run. The faust agent uses ``stream.take(n, within=t)`` and ``topic.send``; faust
acknowledges offsets on its own schedule, which is looser than our commit-after-flush,
so the comparison favours faust on guarantees.

    pip install faust-streaming   # not a project dependency
    python bench/bench_runtime.py [--records 20000] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Sequence

from spatialvid.config import Config
from spatialvid.kafka import EmbeddedBroker, RecordProducer, ensure_topics
from spatialvid.runtime import Result, Stage, StageRunner, StopFlag
from spatialvid.schemas.records import ClipRecord, ScoreRecord


class PassThrough(Stage[ClipRecord]):
    """Validates a clip and emits an empty score: the runtime's own cost, nothing else."""

    name = "bench-pass"
    input = ClipRecord
    outputs = (ScoreRecord,)

    def process_batch(self, items: Sequence[ClipRecord]) -> list[Result]:
        return [[ScoreRecord(clip_id=c.clip_id, video_id=c.video_id, model_id="bench", model_version="1",
                             passed=True)] for c in items]


FAUST_APP = r'''
import sys, time, faust
from spatialvid.schemas.records import ClipRecord, ScoreRecord
bootstrap, src_name, dst_name, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
app = faust.App("bench-faust", broker=f"kafka://{bootstrap}", web_enabled=False)
src = app.topic(src_name, value_type=bytes, value_serializer="raw")
dst = app.topic(dst_name, value_type=bytes, value_serializer="raw")
state = {"n": 0, "t0": None}

@app.agent(src)
async def score(stream):
    async for items in stream.take(batch, within=0.5):
        state["t0"] = state["t0"] or time.perf_counter()
        for v in items:
            c = ClipRecord.model_validate_json(v)
            r = ScoreRecord(clip_id=c.clip_id, video_id=c.video_id, model_id="bench", model_version="1", passed=True)
            await dst.send(key=r.key.encode(), value=r.model_dump_json().encode())
        state["n"] += len(items)
        if state["n"] >= n:
            # faust redirects print() to its logger, one line per argument: write past it.
            sys.__stdout__.write(f"RESULT {n / (time.perf_counter() - state['t0'])}\n")
            sys.__stdout__.flush()
            await app.stop()

sys.argv = ["bench-faust", "worker", "-l", "warn"]
app.main()
'''


def produce(cfg: Config, n: int) -> None:
    out = RecordProducer(cfg)
    for i in range(n):
        out.send(ClipRecord(clip_id=f"v{i // 10:06d}_{i % 10}", video_id=f"v{i // 10:06d}", index=i % 10, num_clips=10,
                            uri="/clips/x.mp4", frame_start=0, frame_end=90, timestamp_start=0.0, timestamp_end=3.0,
                            fps=30.0, width=640, height=360, method="bench"))
    out.flush()


def ours(cfg: Config, n: int) -> float:
    stop = StopFlag()
    runner = StageRunner(PassThrough(cfg), cfg, stop)
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    while runner.counters.batches == 0:
        time.sleep(0.001)
    t0 = time.perf_counter() - runner.counters.busy_s  # from the first batch on
    while runner.counters.processed < n:
        time.sleep(0.001)
    rate = n / (time.perf_counter() - t0)
    stop.set()
    t.join()
    return rate


def faust_rate(cfg: Config, n: int, batch: int) -> float | None:
    try:
        import faust  # noqa: F401
    except ImportError:
        print("faust-streaming is not installed: pip install faust-streaming (bench only)")
        return None
    # faust's worker lingers after app.stop() waiting on its acks: read the result, then end it.
    proc = subprocess.Popen([sys.executable, "-c", FAUST_APP, cfg.kafka.bootstrap, cfg.topic("clips"),
                             cfg.topic("scores"), str(n), str(batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "RESULT" in line:
                return float(line.split("RESULT", 1)[1].split()[0])
            tail = (tail + [line])[-20:]
    finally:
        proc.kill()
        proc.wait()
    print("faust run failed:", "".join(tail))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    with EmbeddedBroker() as broker:
        cfg = Config()
        cfg.kafka.bootstrap = broker.bootstrap
        cfg.kafka.session_timeout_ms = 6000
        cfg.runtime.batch_size = args.batch
        ensure_topics(cfg, ["clips", "scores", "deadletter"])
        produce(cfg, args.records)
        mine = ours(cfg, args.records)
        theirs = faust_rate(cfg, args.records, args.batch)  # its own consumer group: reads the same topic again
    print(json.dumps({"records": args.records, "batch": args.batch, "runtime_msgs_per_s": round(mine),
                      "faust_msgs_per_s": round(theirs) if theirs else None}))
    print(f"spatialvid runtime : {mine:>9,.0f} records/s (validate, process, produce, flush, commit per batch)")
    if theirs:
        print(f"faust agent        : {theirs:>9,.0f} records/s (take({args.batch}), send per record, faust's acks)")
        print(f"ratio runtime/faust: {mine / theirs:.1f}x")


if __name__ == "__main__":
    main()
