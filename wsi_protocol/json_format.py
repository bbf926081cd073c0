"""Protobuf messages to the JSON of the gateway and of ``wsi --json``: plain
state names ("RUNNING", not "JOB_STATE_RUNNING"), integers as numbers,
timestamps as RFC 3339 strings, every field present. Driven by the message
descriptors, so new proto fields appear without code here."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

_ENUM_PREFIXES = ("JOB_STATE_", "WORKFLOW_STATE_")
# A string field kept for older clients whose JSON name goes to a structured
# sibling: (message, JSON name) -> the field shown under that name.
_SHOWN_AS = {("wsi.scheduler.v1.JobResult", "summary"): "structured_summary"}
_HIDDEN = {(message, shown) for (message, _), shown in _SHOWN_AS.items()}


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


def _plain_numbers(value: Any) -> Any:
    """A Struct holds every number as a double: whole ones go back to ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def to_json(message: Message) -> Any:
    if isinstance(message, Timestamp):
        return message.ToJsonString() if message.seconds or message.nanos else None
    if isinstance(message, Struct):
        return _plain_numbers(json_format.MessageToDict(message))
    out: dict[str, Any] = {}
    field: Any
    full_name = message.DESCRIPTOR.full_name
    for listed in message.DESCRIPTOR.fields:
        name = listed.name
        if (full_name, name) in _HIDDEN:
            continue
        shown = _SHOWN_AS.get((full_name, name))
        field = message.DESCRIPTOR.fields_by_name[shown] if shown else listed
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[name] = [_scalar(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[name] = None
        else:
            out[name] = _scalar(field, value)
    return out
