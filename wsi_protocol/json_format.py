"""Protobuf messages to the JSON of the gateway and of ``wsi --json``: plain
state names ("RUNNING", not "JOB_STATE_RUNNING"), integers as numbers,
timestamps as RFC 3339 strings, every field present. Driven by the message
descriptors, so new proto fields appear without code here."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

_ENUM_PREFIXES = ("JOB_STATE_", "WORKFLOW_STATE_")


def enum_name(field: Any, number: int) -> str:
    enum_type = field.enum_type
    assert enum_type is not None
    value = enum_type.values_by_number.get(number)
    name = value.name if value is not None else str(number)
    for prefix in _ENUM_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field, value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    return value


def to_json(message: Message) -> Any:
    if isinstance(message, Timestamp):
        return message.ToJsonString() if message.seconds or message.nanos else None
    out: dict[str, Any] = {}
    field: Any
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _scalar(field, value)
    return out
