"""The records Flywheel moves (``contracts/records.ts``) and their registry serdes.

The schema texts are exactly the ones the TypeScript serdes register (``JSON.stringify`` of the
schema objects), so both sides get the same schema id for a subject and write the same Avro
bodies; ``tests/fixtures/features-vectors.json`` pins them.

Values are plain dicts as the TypeScript types have them: ``created_at`` / ``at`` are epoch
milliseconds (ints), ``source.offset`` a decimal string.

    reg = registry_client("http://127.0.0.1:18081/apis/ccompat/v7")
    ser = serializer(reg, MODEL_UPDATE_SCHEMA)
    payload = ser({"model": "scorer", ...}, SerializationContext(topic, MessageField.VALUE))
    update = decode(deserializer(reg), payload, topic)
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Callable

from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

DEFAULT_REGISTRY_URL = "http://127.0.0.1:18081/apis/ccompat/v7"
DEFAULT_BROKERS = "127.0.0.1:19092"

_STEP = {"type": "record", "name": "TrajectoryStep", "fields": [{"name": "role", "type": "string"}, {"name": "content", "type": "string"}]}
_TS = {"type": "long", "logicalType": "timestamp-millis"}

ROLLOUT = {
    "type": "record",
    "name": "Rollout",
    "namespace": "flywheel",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "run_id", "type": "string", "default": ""},
        {"name": "prompt_id", "type": "string"},
        {"name": "prompt", "type": "string"},
        {"name": "group_id", "type": "string"},
        {"name": "response", "type": ["null", "string"], "default": None},
        {"name": "steps", "type": {"type": "array", "items": _STEP}, "default": []},
        {"name": "model_name", "type": "string", "default": ""},
        {"name": "model_version", "type": "string"},
        {"name": "rewards", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "logprobs", "type": ["null", {"type": "array", "items": "float"}], "default": None},
        {"name": "token_count", "type": "int", "default": 0},
        {"name": "created_at", "type": _TS},
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
}

DECISION = {
    "type": "record",
    "name": "Decision",
    "namespace": "flywheel",
    "fields": [
        {"name": "rollout", "type": ROLLOUT},
        {"name": "scores", "type": {"type": "map", "values": "double"}},
        {"name": "duplicate_of", "type": ["null", "string"], "default": None},
        {"name": "dedupe_method", "type": ["null", "string"], "default": None},
        {"name": "reasons", "type": {"type": "array", "items": "string"}},
        {"name": "decision", "type": {"type": "enum", "name": "Verdict", "symbols": ["accepted", "rejected"]}},
        {"name": "reason", "type": "string"},
        {"name": "config_hash", "type": "string"},
        {"name": "scorer_version", "type": ["null", "string"], "default": None},
        {"name": "annotations", "type": {"type": "map", "values": "string"}, "default": {}},
        {"name": "pipeline_run", "type": "string"},
        {
            "name": "source",
            "type": {
                "type": "record",
                "name": "SourceRef",
                "fields": [{"name": "topic", "type": "string"}, {"name": "partition", "type": "int"}, {"name": "offset", "type": "string"}],
            },
        },
    ],
}

LABEL = {
    "type": "record",
    "name": "Label",
    "namespace": "flywheel",
    "fields": [
        {"name": "rollout_id", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "verifier", "type": "string", "default": ""},
        {"name": "at", "type": _TS},
    ],
}

MODEL_UPDATE = {
    "type": "record",
    "name": "ModelUpdate",
    "namespace": "flywheel",
    "fields": [
        {"name": "model", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "artifact", "type": "string"},
        {"name": "checksum", "type": "string"},
        {"name": "metrics", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "at", "type": _TS},
    ],
}


def schema_text(schema: dict) -> str:
    """The text JSON.stringify gives (no spaces, key order kept): what the TS serdes register."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


ROLLOUT_SCHEMA = schema_text(ROLLOUT)
DECISION_SCHEMA = schema_text(DECISION)
LABEL_SCHEMA = schema_text(LABEL)
MODEL_UPDATE_SCHEMA = schema_text(MODEL_UPDATE)


@dataclass(frozen=True)
class TopicCatalog:
    """The topic names of a deployment (``streams/topics.ts``'s ``topicCatalog``)."""

    prefix: str

    @property
    def rollouts(self) -> str:
        return f"{self.prefix}.rollouts"

    @property
    def accepted(self) -> str:
        return f"{self.prefix}.accepted"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def labels(self) -> str:
        return f"{self.prefix}.labels"

    @property
    def model_updates(self) -> str:
        return f"{self.prefix}.model-updates"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"


def registry_client(url: str = DEFAULT_REGISTRY_URL) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, "timeout": 15})


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)


def _millis(value: Any) -> Any:
    """fastavro turns timestamp-millis into datetimes; the records carry epoch ms (exactly)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return (value - _EPOCH) // _MS
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


def deserializer(registry: SchemaRegistryClient) -> AvroDeserializer:
    """Confluent's Avro deserializer: the writer schema from the record's id, ms timestamps."""
    return AvroDeserializer(registry, from_dict=lambda obj, _ctx: _millis(obj))


def serializer(registry: SchemaRegistryClient, schema: str) -> AvroSerializer:
    """Confluent's Avro serializer registering ``schema`` (same text as TS: same id) under ``<topic>-value``."""
    return AvroSerializer(registry, schema, conf={"auto.register.schemas": True})


class UndecodableRecord(Exception):
    """The record is not a training example (not the wire format, unknown id, bad body): skip it."""


def registry_unavailable(err: BaseException) -> bool:
    """An error that says the registry could not answer (retry), not that the record is bad."""
    status = getattr(err, "http_status_code", None)
    if not isinstance(status, int) or status < 0:
        return True
    return status >= 500 or status in (408, 429, 401, 403)


def decode(deser: AvroDeserializer, payload: bytes | None, topic: str) -> dict:
    """Decodes one value; raises UndecodableRecord for the record's own faults, and lets an
    unreachable registry's error through (the caller retries)."""
    if not payload:
        raise UndecodableRecord("empty record value")
    if payload[0] != 0 or len(payload) < 5:
        raise UndecodableRecord(f"not in the registry's wire format (first byte 0x{payload[0]:02x})")
    try:
        return deser(payload, SerializationContext(topic, MessageField.VALUE))
    except SchemaRegistryError as err:
        if registry_unavailable(err):
            raise
        raise UndecodableRecord(f"writer schema is not in the registry: {err}") from err
    except SerializationError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, SchemaRegistryError) and registry_unavailable(cause):
            raise cause from err
        raise UndecodableRecord(f"does not decode: {err}") from err
    except (ValueError, EOFError, IndexError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise UndecodableRecord(f"does not decode: {err!r}") from err


Encoder = Callable[[dict, SerializationContext], bytes]
