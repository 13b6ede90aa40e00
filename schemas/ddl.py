"""ClickHouse DDL derived from the record models (one source of truth: ``records.py``).

Each record table is a ``ReplacingMergeTree`` ordered by the record's identity, so a
redelivered message collapses onto its first row; the sink also skips identities that
are already stored, so plain ``count()`` and ``count() ... FINAL`` agree.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from .records import CH, RECORD_TYPES, Record

_SCALARS: dict[Any, str] = {str: "String", int: "Int64", float: "Float64", bool: "Bool", datetime: "DateTime64(3, 'UTC')"}

VIEWS_SQL = Path(__file__).with_name("views.sql")


def clickhouse_type(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    """The ClickHouse type of a Python annotation (``CH`` metadata wins)."""
    for meta in metadata:
        if isinstance(meta, CH):
            return meta.type
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = get_args(annotation)
        return clickhouse_type(base, meta)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            inner = clickhouse_type(args[0])
            return inner if inner.startswith(("Array", "Map", "Nullable")) else f"Nullable({inner})"
    if origin is list:
        (item,) = get_args(annotation)
        return f"Array({clickhouse_type(item)})"
    if origin is dict:
        k, v = get_args(annotation)
        return f"Map({clickhouse_type(k)}, {clickhouse_type(v)})"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no ClickHouse type for {annotation!r}")


def field_type(info: FieldInfo) -> str:
    return clickhouse_type(info.annotation, list(info.metadata))


def columns(model: type[Record]) -> dict[str, str]:
    """Column name -> ClickHouse type for a record table (plus the sink's ``ingested_at``)."""
    cols = {name: field_type(info) for name, info in model.model_fields.items()}
    cols["ingested_at"] = "DateTime64(3, 'UTC')"
    return cols


def create_table_sql(model: type[Record], database: str) -> str:
    cols = ",\n    ".join(
        f"`{name}` {ctype}" + (" DEFAULT now64(3)" if name == "ingested_at" else "")
        for name, ctype in columns(model).items()
    )
    order = ", ".join(model.order_by)
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{model.table} (\n    {cols}\n)\n"
        f"ENGINE = ReplacingMergeTree(ingested_at)\nORDER BY ({order})"
    )


def all_ddl(database: str) -> list[str]:
    """Every statement that creates the warehouse: database, tables, then views."""
    return table_ddl(database) + view_ddl(database)


def table_ddl(database: str) -> list[str]:
    """The database and one table per record type."""
    return [f"CREATE DATABASE IF NOT EXISTS {database}"] + [create_table_sql(m, database) for m in RECORD_TYPES]


def view_ddl(database: str) -> list[str]:
    """The views and derived tables of ``schemas/views.sql`` (they read the record tables)."""
    text = VIEWS_SQL.read_text().replace("{db}", database)
    return [s.strip() for s in text.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(stmt: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in stmt.splitlines())
