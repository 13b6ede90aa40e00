"""Shared fixtures: a real Kafka-protocol broker (tansu) and a real ClickHouse engine (chDB).

chDB opens one data folder per process, so the whole session shares one warehouse
folder and every test gets its own database (and its own topic prefix on the broker).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from spatialvid.config import Config
from spatialvid.kafka import EmbeddedBroker, ensure_topics
from spatialvid.producers.samples import SampleSpec, write_sample
from spatialvid.warehouse import init_schema

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def chdb_client(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(tmp_path_factory.mktemp("warehouse")))
    yield client
    client.close()


@pytest.fixture
def cfg(broker: EmbeddedBroker, tmp_path: Path) -> Config:
    """A configuration isolated to this test: own topics, own database, own data folder."""
    n = next(_counter)
    c = Config(data_dir=str(tmp_path / "data"))
    c.kafka.bootstrap = broker.bootstrap
    c.kafka.topic_prefix = f"t{n}-{os.getpid()}."
    c.kafka.partitions = 2
    c.kafka.session_timeout_ms = 6000
    c.warehouse.database = f"test_{n}_{os.getpid()}"
    c.runtime.batch_wait_s = 0.2
    c.sink.batch_wait_s = 0.2
    ensure_topics(c)
    return c


@pytest.fixture
def warehouse(cfg: Config, chdb_client):  # type: ignore[no-untyped-def]
    init_schema(chdb_client, cfg)
    yield chdb_client
    chdb_client.command(f"DROP DATABASE IF EXISTS {cfg.warehouse.database}")


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short 640x360 sample videos with known character (rendered once per session)."""
    folder = tmp_path_factory.mktemp("samples")
    specs = {
        "walk": SampleSpec("walk", 7.0, 3.0, 0.8, "passes"),
        "dark": SampleSpec("dark", 4.0, 3.0, 0.1, "too dark"),
        "static": SampleSpec("static", 4.0, 0.0, 0.8, "no motion"),
    }
    return {k: write_sample(folder / f"{k}.mp4", s, width=640, height=360, seed=i)
            for i, (k, s) in enumerate(specs.items())}


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll until ``cond()`` holds; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class SinkThread:
    """The real ClickHouse sink, run in a thread of the test process."""

    def __init__(self, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
        from spatialvid.runtime import StopFlag
        from spatialvid.sinks.clickhouse import ClickHouseSink

        self.stop = StopFlag()
        self.sink = ClickHouseSink(cfg, client)
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> "SinkThread":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
