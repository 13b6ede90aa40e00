"""Bulk validation for the sink: a compiled fast path derived from the pydantic models.

The pydantic model stays the one source of truth. From it this module derives a
``msgspec`` struct with the same fields, types and defaults, and decodes a whole batch
of messages with it in one C call (about 8x pydantic per record on this machine). A
message the fast path rejects is validated again by pydantic, which either accepts it
(its lax coercions, such as ``1.0`` for an int) or gives the error text of the dead
letter. So the fast path only ever accepts what pydantic accepts (a test checks this
on mutated records), and the error messages are pydantic's.

A model whose validation the struct cannot mirror exactly (validators, field
constraints, types outside the plain JSON ones) still gets a struct, for encoding, but
every message of it goes through pydantic.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from pydantic import ValidationError

from .records import CH, Record

_PLAIN = (str, int, float, bool, datetime, type(None))


class _NotMirrored(TypeError):
    """A field type or constraint the struct cannot reproduce exactly."""


def _mirror(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        if any(not isinstance(m, CH) for m in meta):
            raise _NotMirrored(f"constraint {meta}")
        return _mirror(inner)
    if origin in (Union, types.UnionType):
        return Union[tuple(_mirror(a) for a in get_args(tp))]
    if origin is list:
        return list[_mirror(get_args(tp)[0])]  # type: ignore[misc]
    if origin is dict:
        k, v = get_args(tp)
        return dict[_mirror(k), _mirror(v)]  # type: ignore[misc]
    if origin is Literal:
        return tp
    if tp in _PLAIN:
        return tp
    raise _NotMirrored(f"type {tp!r}")


def derive_struct(model: type[Record]) -> tuple[type[msgspec.Struct], bool]:
    """The msgspec struct of ``model``, and whether it validates exactly like the model."""
    decorators = model.__pydantic_decorators__
    exact = not any(getattr(decorators, k) for k in ("validators", "field_validators", "model_validators",
                                                     "root_validators", "field_serializers", "model_serializers"))
    fields: list[tuple[Any, ...]] = []
    for name, f in model.model_fields.items():
        try:
            if any(not isinstance(m, CH) for m in f.metadata):
                raise _NotMirrored(f"constraints {f.metadata}")
            tp = _mirror(f.annotation)
        except _NotMirrored:
            exact, tp = False, Any
        if f.is_required():
            fields.append((name, tp))
        elif f.default_factory is not None:
            fields.append((name, tp, msgspec.field(default_factory=f.default_factory)))  # type: ignore[arg-type]
        else:
            fields.append((name, tp, f.default))
    struct = msgspec.defstruct(f"{model.__name__}Row", fields, kw_only=True, forbid_unknown_fields=True, gc=False)
    return struct, exact


class BulkCodec:
    """Decodes batches of one record type's JSON messages; encodes rows as JSON for ClickHouse."""

    def __init__(self, model: type[Record]) -> None:
        self.model = model
        self.struct, self.exact = derive_struct(model)
        self._one = msgspec.json.Decoder(self.struct)
        self._many = msgspec.json.Decoder(list[self.struct])  # type: ignore[name-defined]
        self._encoder = msgspec.json.Encoder()

    def decode(self, values: list[bytes]) -> list[Any]:
        """One row (a struct) or one ``ValidationError`` per value, in order."""
        if self.exact:
            try:
                return list(self._many.decode(b"[" + b",".join(values) + b"]"))
            except msgspec.DecodeError:
                pass  # some message is off: sort them out one by one
        return [self._decode_one(v) for v in values]

    def _decode_one(self, value: bytes) -> Any:
        if self.exact:
            try:
                return self._one.decode(value)
            except msgspec.DecodeError:
                pass
        try:
            record = self.model.model_validate_json(value)
        except ValidationError as exc:
            return exc
        return msgspec.convert(record.model_dump(), self.struct)

    def encode(self, rows: list[Any]) -> bytes:
        """Rows as one JSON array: ClickHouse reads it as ``JSONEachRow``."""
        return self._encoder.encode(rows)
