"""The ClickHouse sink: every topic into its table, in batches, redelivery-proof.

One consumer group (``sink``) reads all record topics. A batch closes at
``sink.batch_rows`` messages or ``sink.batch_wait_s`` seconds. Per table, the sink
validates each message against its record model, drops repeats of an identity (the
table's ORDER BY) within the batch and those already stored, inserts the rest
column-wise, and only then commits the offsets. A message that fails validation
becomes a dead letter (produced to the ``deadletter`` topic, flushed before commit).

Redelivery therefore never shows up as a second row: plain ``count()`` equals
``count() FINAL``; ReplacingMergeTree is the backstop should two sink workers ever
race on a rebalance (keys pin one clip to one partition, so they normally cannot).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from spatialvid.config import Config
from spatialvid.kafka import TOPICS, RecordProducer, checked, commit_after, consumer_conf
from spatialvid.runtime import StopFlag, describe_validation_error, message_dead_letter
from spatialvid.schemas.ddl import field_type
from spatialvid.schemas.records import BY_TOPIC, Record

log = logging.getLogger(__name__)

STAGE = "sink"


@dataclass
class SinkCounters:
    consumed: int = 0
    inserted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0


class ClickHouseSink:
    """Consumes the record topics and writes them into the warehouse."""

    def __init__(self, cfg: Config, client: Client, lock: threading.Lock | None = None,
                 topics: tuple[str, ...] = TOPICS) -> None:
        self.cfg = cfg
        self.client = client
        self.lock = lock or threading.Lock()
        self.counters = SinkCounters()
        self._by_full_topic = {cfg.topic(t): BY_TOPIC[t] for t in topics}
        self._consumer = Consumer(consumer_conf(cfg, STAGE, **{"fetch.max.bytes": 64 << 20}))
        self._consumer.subscribe(list(self._by_full_topic))
        self._producer = RecordProducer(cfg)
        self._columns = {m: list(m.model_fields) for m in self._by_full_topic.values()}

    def close(self) -> None:
        self._consumer.close()

    def run(self, stop: StopFlag) -> SinkCounters:
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()
        return self.counters

    def poll_once(self) -> int:
        """Consume and write one batch; returns how many messages it held."""
        deadline = time.monotonic() + self.cfg.sink.batch_wait_s
        msgs: list[Message] = []
        while len(msgs) < self.cfg.sink.batch_rows:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self._consumer.consume(min(10000, self.cfg.sink.batch_rows - len(msgs)), timeout=left)
            msgs.extend(got)
            if not got:
                break
        if msgs:
            self.write(msgs)
        return len(msgs)

    def write(self, msgs: list[Message]) -> None:
        """Validate, deduplicate and insert one batch, then commit its offsets."""
        msgs = list(checked(msgs))
        rows: dict[type[Record], list[Record]] = defaultdict(list)
        dead = 0
        for m in msgs:
            model = self._by_full_topic[m.topic()]
            try:
                rows[model].append(model.model_validate_json(m.value() or b""))
            except ValidationError as exc:
                self._producer.send(message_dead_letter(STAGE, m, describe_validation_error(exc), "MalformedRecord"))
                dead += 1
        if dead:
            self._producer.flush()
        with self.lock:
            for model, records in rows.items():
                self._insert(model, records)
        commit_after(self._consumer, msgs)
        self.counters.consumed += len(msgs)
        self.counters.dead_letters += dead
        self.counters.batches += 1

    def _insert(self, model: type[Record], records: list[Record]) -> None:
        fresh: dict[tuple[Any, ...], Record] = {}
        for r in records:
            fresh.setdefault(r.identity(), r)
        stored = self._stored_identities(model, list(fresh))
        new = [r for ident, r in fresh.items() if ident not in stored]
        self.counters.duplicates += len(records) - len(new)
        if not new:
            return
        cols = self._columns[model]
        data = [[getattr(r, c) for r in new] for c in cols]
        self.client.insert(f"{self.cfg.warehouse.database}.{model.table}", data, column_names=cols, column_oriented=True)
        self.counters.inserted[model.table] += len(new)

    def _stored_identities(self, model: type[Record], idents: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Identities of this batch already in the table.

        Looks up by the first ORDER BY column (a primary-key range) through a set built
        from the bound array (``IN (SELECT arrayJoin(...))``: measured 100x faster than
        ``IN {array}`` at 50k keys), then matches the full identity here.
        """
        keys = model.order_by
        # Parameter type: LowCardinality is a storage detail, not a value type.
        first_type = re.sub(r"^LowCardinality\((.*)\)$", r"\1", field_type(model.model_fields[keys[0]]))
        sql = (f"SELECT {', '.join(keys)} FROM {self.cfg.warehouse.database}.{model.table} "
               f"WHERE {keys[0]} IN (SELECT arrayJoin({{ids:Array({first_type})}}))")
        rows = self.client.query(sql, parameters={"ids": list({i[0] for i in idents})}).result_rows
        return {tuple(r) for r in rows}
