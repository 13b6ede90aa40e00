"""The sink's bulk codec (msgspec fast path) agrees with the pydantic models it mirrors,
and a row the table refuses becomes a dead letter without holding up the batch."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pydantic import ValidationError, field_validator

from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.schemas.fast import BulkCodec, derive_struct
from spatialvid.schemas.records import (AnnotationRecord, ClipRecord, DeadLetter, Record, ScoreRecord,
                                        VideoRecord)

from .conftest import SinkThread, wait_for

EXAMPLES: list[Record] = [
    VideoRecord(video_id="v", uri="/x.mp4", source="local", duration_s=12.5, fps=30.0, width=1280, height=720,
                num_frames=375, codec="h264", rotation=-90),
    ClipRecord(clip_id="v_0", video_id="v", index=0, num_clips=2, uri="/x.mp4", frame_start=0, frame_end=90,
               timestamp_start=0.0, timestamp_end=3.0, fps=30.0, width=1280, height=720, method="scenes-v1"),
    ScoreRecord(clip_id="v_0", video_id="v", model_id="m", model_version="1", luminance_mean=80.5, motion=None,
                passed=False, reject_reasons=["motion"]),
    AnnotationRecord(clip_id="v_0", video_id="v", model_id="colmap", model_version="1", success=True,
                     move_dist=1.5, dist_level=3, instruction_steps={"Dolly In": 12, "Stay": 3}),
    DeadLetter(dead_letter_id="d", stage="score", error_class="X", error_message="m\nline two"),
]

#: Replacement values that exercise the edges of JSON typing: wrong kinds, nulls,
#: numbers as strings, floats for ints, huge numbers, odd strings.
ODD_VALUES: list[Any] = [None, 0, -1, 1.0, 1.5, 2**70, "1", "1.5", "true", "", "x\u0000y", True, False, [], {},
                         ["a"], {"a": 1}, {"a": "b"}, "2026-11-21T10:00:00Z", "2026-11-21 10:00:00", "not a date",
                         1e308, -0.0]


def mutations(record: Record, rng: random.Random, n: int) -> list[bytes]:
    base = json.loads(record.model_dump_json())
    out = [json.dumps(base).encode()]
    for _ in range(n):
        doc = dict(base)
        kind = rng.random()
        key = rng.choice(list(doc))
        if kind < 0.7:
            doc[key] = rng.choice(ODD_VALUES)
        elif kind < 0.85:
            del doc[key]
        else:
            doc["unexpected_field"] = 1
        out.append(json.dumps(doc).encode())
    out += [b"", b"{", b"[]", b"null", b"\xff\xfe"]
    return out


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_fast_path_accepts_only_what_pydantic_accepts_and_reads_it_the_same(record: Record) -> None:
    codec = BulkCodec(type(record))
    assert codec.exact, f"{type(record).__name__} should have an exact fast path"
    rng = random.Random(7)
    values = mutations(record, rng, 400)
    rows = codec.decode(values)
    assert len(rows) == len(values)
    accepted = 0
    for value, row in zip(values, rows):
        try:
            expected = type(record).model_validate_json(value)
        except ValidationError:
            assert isinstance(row, ValidationError), f"fast path accepted what pydantic refuses: {value!r}"
            continue
        accepted += 1
        assert not isinstance(row, ValidationError), f"refused what pydantic accepts: {value!r}: {row}"
        got = json.loads(codec.encode([row]))[0]
        want = json.loads(expected.model_dump_json())
        for timestamp in ("produced_at", "scored_at", "annotated_at", "failed_at"):
            got.pop(timestamp, None), want.pop(timestamp, None)  # defaults taken at different instants
        assert got == want, f"{value!r} read differently"
    assert 30 < accepted < len(values)  # the mutations hit both sides


def test_one_bad_message_in_a_batch_does_not_spoil_the_rest() -> None:
    codec = BulkCodec(ScoreRecord)
    good = [ScoreRecord(clip_id=f"c{i}", video_id="v", model_id="m", model_version="1", passed=True)
            .model_dump_json().encode() for i in range(5)]
    rows = codec.decode(good[:2] + [b'{"clip_id": 3}'] + good[2:])
    assert [isinstance(r, ValidationError) for r in rows] == [False, False, True, False, False, False]
    assert [r.clip_id for r in rows if not isinstance(r, ValidationError)] == ["c0", "c1", "c2", "c3", "c4"]


def test_the_high_volume_record_types_keep_an_exact_fast_path() -> None:
    # A model that grows a validator or a constraint still works, through pydantic,
    # but loses the fast path; for the types that arrive per clip at crawl rate, that
    # would be a silent slowdown of the sink.
    slow = [m.__name__ for m in (VideoRecord, ClipRecord, ScoreRecord, AnnotationRecord, DeadLetter)
            if not derive_struct(m)[1]]
    assert slow == [], f"record types without an exact fast path: {slow}"


class Shouting(Record):
    """A record with a validator: the struct cannot mirror it."""

    topic = "t"
    table = "t"
    order_by = ("word",)
    word: str

    @field_validator("word")
    @classmethod
    def upper(cls, v: str) -> str:
        return v.upper()


def test_a_type_without_an_exact_fast_path_goes_through_pydantic() -> None:
    codec = BulkCodec(Shouting)
    assert not codec.exact
    rows = codec.decode([b'{"word": "hi"}', b'{"word": 1}', b"{"])
    assert rows[0].word == "HI"
    assert isinstance(rows[1], ValidationError) and isinstance(rows[2], ValidationError)


def test_a_row_the_table_refuses_becomes_a_dead_letter(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    out = RecordProducer(cfg)
    good = [ScoreRecord(clip_id=f"v_{i}", video_id="v", model_id="m", model_version="1", passed=True) for i in range(9)]
    # num_frames is a plain int to the model but UInt32 in the table: -1 is refused by ClickHouse.
    bad = ScoreRecord(clip_id="v_bad", video_id="v", model_id="m", model_version="1", num_frames=-1, passed=True)
    with SinkThread(cfg, warehouse) as sink:
        for r in good[:5] + [bad] + good[5:]:
            out.send(r)
        out.flush()
        wait_for(lambda: sink.sink.counters.consumed >= 10, 60, "10 messages through the sink")
        wait_for(lambda: int(warehouse.query(f"SELECT count() FROM {db}.deadletters").result_rows[0][0]) >= 1,
                 60, "the refused row's dead letter")
    ids = {r[0] for r in warehouse.query(f"SELECT clip_id FROM {db}.clip_scores").result_rows}
    assert ids == {f"v_{i}" for i in range(9)}
    (stage, cls, key, msg), = warehouse.query(
        f"SELECT stage, error_class, source_key, error_message FROM {db}.deadletters").result_rows
    assert (stage, cls, key) == ("sink", "RejectedByWarehouse", "v_bad")
    assert "num_frames" in msg


def test_the_owner_of_an_embedded_warehouse_merges_the_latest_state_table(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    cfg.sink.merge_every_s = 0.0  # merge after every batch
    out = RecordProducer(cfg)
    with SinkThread(cfg, warehouse) as sink:
        for batch in range(3):
            for i in range(5):
                out.send(ScoreRecord(clip_id=f"b{batch}_{i}", video_id="v", model_id="m", model_version="1", passed=True))
            out.flush()
            wait_for(lambda: sink.sink.counters.consumed >= 5 * (batch + 1), 60, f"batch {batch} through the sink")
    parts = warehouse.query("SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'clip_latest' "
                            "AND active", parameters={"db": db}).result_rows[0][0]
    assert parts == 1, f"clip_latest has {parts} active parts after three batches"
    assert warehouse.query(f"SELECT count() FROM {db}.clip_latest").result_rows[0][0] == 15
