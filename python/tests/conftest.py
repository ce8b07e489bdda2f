"""Shared test set-up: the real services (KAFKA_BROKERS, SCHEMA_REGISTRY_URL as deploy/test-env.sh
exports them), unique topic prefixes, topic creation, and Avro producers for the test data."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.serialization import MessageField, SerializationContext

from flywheel_trainer.records import DECISION_SCHEMA, LABEL_SCHEMA, ROLLOUT_SCHEMA, TopicCatalog, registry_client, serializer

REPO = Path(__file__).resolve().parents[2]
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:19092")
REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:18081/apis/ccompat/v7")
VECTORS = json.loads((REPO / "tests" / "fixtures" / "features-vectors.json").read_text())


def unique_prefix(name: str) -> str:
    return f"t-py-{name}-{uuid.uuid4().hex[:8]}"


def create_topics(catalog: TopicCatalog, partitions: int = 3) -> None:
    """The topics a trainer reads and writes (model-updates and control have one partition)."""
    admin = AdminClient({"bootstrap.servers": BROKERS})
    topics = [NewTopic(t, partitions, 1) for t in (catalog.accepted, catalog.decisions, catalog.labels)]
    topics += [NewTopic(t, 1, 1) for t in (catalog.model_updates, catalog.control)]
    for topic, future in admin.create_topics(topics).items():
        future.result(30)
    wait_until(lambda: all(t.topic in admin.list_topics(timeout=10).topics for t in topics), "topics to exist")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


class AvroProducer:
    """Writes records in the registry's wire format; ``transaction`` groups sends (commit or abort)."""

    def __init__(self, transactional: bool = False) -> None:
        self.registry = registry_client(REGISTRY)
        self.sers = {"rollout": serializer(self.registry, ROLLOUT_SCHEMA), "decision": serializer(self.registry, DECISION_SCHEMA), "label": serializer(self.registry, LABEL_SCHEMA)}
        conf = {"bootstrap.servers": BROKERS, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        if transactional:
            conf["transactional.id"] = f"py-test-{uuid.uuid4().hex[:8]}"
        self.producer = Producer(conf)
        if transactional:
            self.producer.init_transactions(30)

    def encode(self, kind: str, topic: str, value: dict) -> bytes:
        return self.sers[kind](value, SerializationContext(topic, MessageField.VALUE))

    def send(self, topic: str, kind: str, records: Iterable[tuple[str, dict]]) -> None:
        for key, value in records:
            self.producer.produce(topic, key=key.encode(), value=self.encode(kind, topic, value))

    def raw(self, topic: str, key: str, value: bytes) -> None:
        self.producer.produce(topic, key=key.encode(), value=value)

    def transaction(self, commit: bool, fill: Callable[[], None]) -> None:
        self.producer.begin_transaction()
        fill()
        if commit:
            self.producer.commit_transaction(30)
        else:
            self.producer.flush(30)
            self.producer.abort_transaction(30)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def rollout(i: int, run: str, correct: bool = True, **over) -> dict:
    a, b = i % 17, (i * 7) % 13
    r = {
        "id": f"{run}-r{i}",
        "run_id": run,
        "prompt_id": f"{run}-p{i}",
        "prompt": f"What is {a} + {b}?",
        "group_id": f"{run}-g{i // 2}",
        "response": f"Answer: {a + b if correct else a + b + 1}",
        "steps": [],
        "model_name": "policy",
        "model_version": "v1",
        "rewards": {"correct": 1.0 if correct else 0.0},
        "logprobs": None,
        "token_count": 4,
        "created_at": int(time.time() * 1000),
        "tags": {"source": "synthetic"},
    }
    r.update(over)
    return r


def decision(r: dict, run: str) -> dict:
    return {
        "rollout": r,
        "scores": {},
        "duplicate_of": None,
        "dedupe_method": None,
        "reasons": [],
        "decision": "accepted",
        "reason": "accepted",
        "config_hash": "test",
        "scorer_version": None,
        "annotations": {},
        "pipeline_run": run,
        "source": {"topic": "x.rollouts", "partition": 0, "offset": "0"},
    }


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
