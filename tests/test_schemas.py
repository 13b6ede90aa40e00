"""The records are the one source of truth: JSON Schema and the warehouse tables agree with them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spatialvid.config import Config
from spatialvid.schemas.ddl import columns
from spatialvid.schemas.records import RECORD_TYPES, AnnotationRecord, ClipRecord, dead_letter, slug_id


@pytest.mark.parametrize("model", RECORD_TYPES, ids=lambda m: m.__name__)
def test_every_record_has_schema_version_and_a_table(model) -> None:  # type: ignore[no-untyped-def]
    schema = model.model_json_schema()
    assert "schema_version" in schema["properties"], f"{model.__name__} lacks schema_version"
    assert set(model.order_by) <= set(model.model_fields), f"{model.__name__}.order_by names unknown fields"


def test_tables_in_clickhouse_match_the_models(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    for model in RECORD_TYPES:
        rows = warehouse.query(f"DESCRIBE TABLE {cfg.warehouse.database}.{model.table}").result_rows
        actual = {r[0]: r[1] for r in rows}
        assert actual == columns(model), f"table {model.table} drifted from {model.__name__}"


def test_a_warehouse_of_an_older_record_version_gets_the_new_columns(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    """Fields are only ever added to records; starting on an older warehouse adds their columns."""
    from spatialvid.warehouse import init_schema

    db = cfg.warehouse.database
    warehouse.command(f"ALTER TABLE {db}.clip_annotations DROP COLUMN depth_model")
    init_schema(warehouse, cfg)
    rows = warehouse.query(f"DESCRIBE TABLE {db}.clip_annotations").result_rows
    assert {r[0]: r[1] for r in rows} == columns(AnnotationRecord)


def test_result_records_name_stage_model_and_version() -> None:
    for model in RECORD_TYPES:
        if model.topic in ("scores", "annotations", "captions"):
            assert {"stage", "model_id", "model_version"} <= set(model.model_fields), model.__name__


def test_validation_rejects_malformed_clip() -> None:
    with pytest.raises(ValidationError):
        ClipRecord.model_validate_json(b'{"clip_id": "x", "fps": "fast"}')
    with pytest.raises(ValidationError):
        ClipRecord.model_validate_json(b"\xff\xfe not json")


def test_dead_letter_ids_are_deterministic_and_binary_payloads_survive() -> None:
    a = dead_letter("score", ValueError("bad"), b"\xff\x00", source_topic="t", source_partition=1, source_offset=7)
    b = dead_letter("score", ValueError("bad"), b"\xff\x00", source_topic="t", source_partition=1, source_offset=7)
    assert a.dead_letter_id == b.dead_letter_id
    assert a.payload_encoding == "base64" and a.error_class == "ValueError"


@pytest.mark.parametrize("name", ['a"b', "new\nline", "../../etc/passwd", "caf\udce9", "", "/"])
def test_ids_from_hostile_names_are_path_safe(name: str) -> None:
    vid = slug_id(name, "/some/ref/" + name)
    assert vid and all(c.isalnum() or c == "-" for c in vid), f"{name!r} -> {vid!r}"
