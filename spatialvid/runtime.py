"""The stage runtime: runs any :class:`Stage` as a member of a Kafka consumer group.

A stage never sees Kafka. The runtime (confluent-kafka) does, for every micro-batch:

1. consume up to ``runtime.batch_size`` messages, waiting at most ``runtime.batch_wait_s``;
2. validate each against the stage's input record type; a malformed one becomes a
   dead letter;
3. call ``stage.process_batch(items)``; if the whole batch raises, retry with backoff,
   then fall back to one item at a time so one poison item cannot block the rest;
   an item that still fails (or that the stage reports as failed) becomes a dead letter;
4. produce every output and dead letter, **flush**, and only then commit the input
   offsets (at-least-once: a worker killed mid-batch redoes the batch; deterministic
   ids make the redo harmless downstream).

Why confluent-kafka rather than faust here: the stage must commit only after its
outputs are flushed, CPU/GPU work must stay off any event loop, and tansu (the
embedded broker) mis-reports high watermarks for multi-message batches, which breaks
faust's table recovery; a plain consumer loop gives all three with the least
machinery. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Generic, Sequence, TypeVar

from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from .config import Config
from .kafka import RecordProducer, checked, commit_after, consumer_conf, message_key
from spatialvid.schemas.records import DeadLetter, Record, dead_letter

log = logging.getLogger(__name__)

In = TypeVar("In", bound=Record)
Result = list[Record] | BaseException


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs (used for scheduling and the compose file)."""

    cpus: float = 1.0
    gpu_memory_gb: float = 0.0


class Stage(ABC, Generic[In]):
    """A processor: records of one type in, records out. Pure of Kafka.

    Subclasses declare ``name`` (also the consumer group), ``input`` (record type of
    the input topic) and ``outputs``, load models in :meth:`setup` (once per worker,
    failing early with a clear message) and implement :meth:`process_batch`.
    """

    name: ClassVar[str]
    input: ClassVar[type[Record]]
    outputs: ClassVar[tuple[type[Record], ...]]
    resources: ClassVar[Resources] = Resources()

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        """Load models and open resources; raise with a clear message if impossible."""

    @abstractmethod
    def process_batch(self, items: Sequence[In]) -> list[Result]:
        """One result per item, in order: the records it produced, or the exception
        that made it fail (which the runtime turns into a dead letter)."""

    def teardown(self) -> None:
        """Release what :meth:`setup` opened."""


STAGES: dict[str, type[Stage[Any]]] = {}


def register_stage(cls: type[Stage[Any]]) -> type[Stage[Any]]:
    """Class decorator: make a stage runnable by name (``spatialvid process NAME``)."""
    STAGES[cls.name] = cls
    return cls


def get_stage(name: str) -> type[Stage[Any]]:
    import spatialvid.processors  # noqa: F401  (registers the built-in stages)

    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}") from None


@dataclass
class StageCounters:
    """Per-stage counters, logged periodically and at stop."""

    consumed: int = 0
    processed: int = 0
    produced: int = 0
    dead_letters: int = 0
    batches: int = 0
    retries: int = 0
    busy_s: float = 0.0

    def line(self, name: str) -> str:
        d = asdict(self)
        rate = self.processed / self.busy_s if self.busy_s else 0.0
        return f"[{name}] " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()) + f" items/busy_s={rate:.1f}"


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line: wrong values first (with what was wrong), then missing fields."""
    wrong, missing = [], []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(record)"
        if err.get("type") == "missing":
            missing.append(loc)
        else:
            wrong.append(f"{loc}: {err.get('msg')} (got {str(err.get('input'))[:40]!r})" if loc != "(record)"
                         else f"{err.get('msg')}")
    parts = wrong[:5] + ([f"missing fields: {', '.join(missing)}"] if missing else [])
    return f"{exc.title} record failed validation: " + "; ".join(parts)


def message_dead_letter(stage: str, m: Message, error: BaseException | str, error_class: str | None = None) -> DeadLetter:
    """The dead letter for a consumed message: its position, key and original payload."""
    return dead_letter(stage, error, m.value() or b"", error_class=error_class, source_topic=m.topic() or "",
                       source_partition=m.partition(), source_offset=m.offset(), source_key=message_key(m))


class StopFlag:
    """Set by SIGTERM/SIGINT (or by code); the runtime finishes the batch in hand, then stops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: object) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)


class StageRunner:
    """Runs one stage instance against Kafka until stopped."""

    def __init__(self, stage: Stage[Any], cfg: Config, stop: StopFlag | None = None) -> None:
        self.stage = stage
        self.cfg = cfg
        self.stop = stop or StopFlag()
        self.counters = StageCounters()
        self.topic = cfg.topic(stage.input.topic)
        self._consumer: Consumer | None = None
        self._producer: RecordProducer | None = None

    def run(self, log_every_s: float = 30.0) -> StageCounters:
        self.stage.setup()
        self._consumer = Consumer(consumer_conf(self.cfg, self.stage.name))
        self._producer = RecordProducer(self.cfg)
        self._consumer.subscribe([self.topic])
        log.info("stage %s consuming %s as group %s%s", self.stage.name, self.topic,
                 self.cfg.kafka.topic_prefix, self.stage.name)
        last_log = time.monotonic()
        try:
            while not self.stop.is_set():
                msgs = self._consumer.consume(self.cfg.runtime.batch_size, timeout=self.cfg.runtime.batch_wait_s)
                if msgs:
                    self.process_messages(msgs)
                if time.monotonic() - last_log > log_every_s:
                    log.info(self.counters.line(self.stage.name))
                    last_log = time.monotonic()
        finally:
            self._consumer.close()  # leaves the group at once, so a rebalance is quick
            self.stage.teardown()
            log.info(self.counters.line(self.stage.name))
        return self.counters

    # -- one micro-batch -------------------------------------------------------------
    def process_messages(self, msgs: list[Message]) -> None:
        assert self._producer is not None and self._consumer is not None
        t0 = time.monotonic()
        msgs = list(checked(msgs))
        items: list[Any] = []
        sources: list[Message] = []
        for m in msgs:
            self.counters.consumed += 1
            try:
                items.append(self.stage.input.model_validate_json(m.value() or b""))
                sources.append(m)
            except ValidationError as exc:
                self._dead_letter(m, describe_validation_error(exc), "MalformedRecord")
        results = self._process(items)
        for m, result in zip(sources, results):
            if isinstance(result, BaseException):
                self._dead_letter(m, result, None)
            else:
                for record in result:
                    self._producer.send(record)
                    self.counters.produced += 1
                self.counters.processed += 1
        self._producer.flush()  # outputs durable in Kafka ...
        commit_after(self._consumer, msgs)  # ... before the inputs are marked done
        self.counters.batches += 1
        self.counters.busy_s += time.monotonic() - t0

    def _process(self, items: list[Any]) -> list[Result]:
        if not items:
            return []
        try:
            return self._with_retries(items)
        except Exception as exc:  # the batch keeps failing: isolate the bad item(s)
            if len(items) == 1:
                return [exc]
            log.warning("stage %s: batch of %d failed (%s); retrying one by one", self.stage.name, len(items), exc)
            out: list[Result] = []
            for item in items:
                try:
                    out.extend(self._with_retries([item]))
                except Exception as item_exc:
                    out.append(item_exc)
            return out

    def _with_retries(self, items: list[Any]) -> list[Result]:
        attempt = 0
        while True:
            try:
                results = self.stage.process_batch(items)
                if len(results) != len(items):
                    raise RuntimeError(f"stage {self.stage.name} returned {len(results)} results for {len(items)} items")
                return results
            except Exception:
                attempt += 1
                if attempt > self.cfg.runtime.max_retries:
                    raise
                self.counters.retries += 1
                time.sleep(self.cfg.runtime.retry_backoff_s * 2 ** (attempt - 1))

    def _dead_letter(self, m: Message, error: BaseException | str, error_class: str | None) -> DeadLetter:
        assert self._producer is not None
        dl = message_dead_letter(self.stage.name, m, error, error_class)
        log.warning("stage %s: dead letter for %s: %s: %s", self.stage.name, dl.source_key or "?", dl.error_class, dl.error_message)
        self._producer.send(dl)
        self.counters.dead_letters += 1
        return dl
