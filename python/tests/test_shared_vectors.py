"""The shared vectors of tests/fixtures/features-vectors.json (written by the TypeScript code):
the Python port gives the same bytes — feature vectors, hashes, admission sequences, Avro bodies
— and records written by TypeScript decode here through the real registry."""

from __future__ import annotations

import json
import struct
import uuid

import numpy as np
import pytest
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import REGISTRY, VECTORS
from flywheel_trainer.admission import ReplayBuffer, ReplayConfig, SeededRandom, StarvationConfig, StarvationMonitor
from flywheel_trainer.features import LOGIT_EPSILON, FeatureConfig, feature_layout, featurize, murmur3, text_features
from flywheel_trainer.records import DECISION_SCHEMA, LABEL_SCHEMA, MODEL_UPDATE_SCHEMA, ROLLOUT_SCHEMA, decode, deserializer, registry_client, serializer

CONFIGS = {name: FeatureConfig.from_json(c) for name, c in VECTORS["configs"].items()}
ROLLOUTS = {r["id"]: r for r in VECTORS["rollouts"]}
SCHEMAS = {"rollout": ROLLOUT_SCHEMA, "decision": DECISION_SCHEMA, "label": LABEL_SCHEMA, "modelUpdate": MODEL_UPDATE_SCHEMA}


def bits(vector: np.ndarray) -> str:
    return vector.astype("<f4").tobytes().hex()


def test_murmur3_matches():
    for case in VECTORS["murmur3"]:
        assert murmur3(case["values"], case["seed"]) == case["hash"], case


@pytest.mark.parametrize("case", VECTORS["features"], ids=lambda c: f"{c['config']}-{c['rollout']}")
def test_feature_vectors_are_byte_identical(case):
    got = featurize(ROLLOUTS[case["rollout"]], CONFIGS[case["config"]])
    if bits(got) != case["vector"]:
        want = np.frombuffer(bytes.fromhex(case["vector"]), dtype="<f4")
        diff = np.nonzero(want.view(np.uint32) != got.view(np.uint32))[0]
        pytest.fail(f"{len(diff)} of {len(want)} values differ, first at {diff[:5].tolist()}: want {want[diff[:5]].tolist()} got {got[diff[:5]].tolist()}")


def test_vectors_are_not_trivial():
    # A fixture of zero vectors would match anything that returns zeros.
    nonzero = [c for c in VECTORS["features"] if np.any(np.frombuffer(bytes.fromhex(c["vector"]), dtype="<f4")[:64] != 0)]
    assert len(nonzero) > len(VECTORS["features"]) // 2


def test_logit_rewards_are_covered_and_checked():
    # The vectors take rewards as logits (inside (0, 1), clamped, missing) next to raw ones.
    cfg = CONFIGS["logit"]
    assert cfg.logit_rewards and set(cfg.logit_rewards) < set(cfg.reward_names)
    assert any(c["config"] == "logit" and c["rollout"] == "probs" for c in VECTORS["features"])
    assert feature_layout(cfg)[2:4] == ["reward_logit:correct", "reward_logit:format"]
    v = featurize(ROLLOUTS["probs"], cfg)
    tail = v[cfg.dims + 2 :]
    assert tail[0] == np.float32(np.log(13 / 3)) and tail[1] == np.float32(np.log(LOGIT_EPSILON / (1 - LOGIT_EPSILON)))
    assert tail[6] == np.float32(-1.2345678) and tail[7] == 0  # raw, and missing
    with pytest.raises(ValueError, match="logitRewards"):
        FeatureConfig.from_json({"rewardNames": ["a"], "logitRewards": ["b"]})


def test_text_features_match():
    for case in VECTORS["textFeatures"]:
        assert bits(text_features(case["text"], CONFIGS[case["config"]])) == case["vector"], case["text"]


def test_schema_texts_are_the_ones_typescript_registers():
    for name, text in VECTORS["schemas"].items():
        assert SCHEMAS[name] == text, name


def test_mulberry32_sequence():
    v = VECTORS["admission"]["mulberry32"]
    r = SeededRandom(v["seed"])
    assert [r.next() for _ in v["values"]] == v["values"]


def test_replay_buffer_draws_as_typescript():
    v = VECTORS["admission"]["replay"]
    c = v["config"]
    config = ReplayConfig(
        capacity=c["capacity"], max_reuse=c["maxReuse"], cool_down_ms=c["coolDownMs"], per_batch=c["perBatch"], recency_weight=c["recencyWeight"],
        recency_half_life_ms=c["recencyHalfLifeMs"], score_weight=c["scoreWeight"], score_name=c["scoreName"], alpha=c["alpha"], seed=c["seed"],
    )
    buffer: ReplayBuffer[str] = ReplayBuffer(config)
    for step in v["steps"]:
        assert [d["id"] for d in buffer.draw(config.per_batch, step["now"])] == step["drawn"], step["now"]
        buffer.add(({**a, "value": a["id"]} for a in step["add"]), step["now"])
    assert buffer.snapshot() == v["snapshot"]


def test_starvation_signals_as_typescript():
    v = VECTORS["admission"]["starvation"]
    c = v["config"]
    monitor = StarvationMonitor("ranker", StarvationConfig(idle_ms=c["idleMs"], min_rate=c["minRate"], window_ms=c["windowMs"], repeat_ms=c["repeatMs"]), 0)
    signals = []
    for step in v["script"]:
        if step["admitted"] is not None:
            monitor.record(step["admitted"], step["now"], step.get("rejected", {}))
            signals.append(None)
        else:
            signals.append(monitor.check(step["now"]))
    assert signals == [s["signal"] for s in v["script"]]
    assert any(s is not None and s["kind"] == "starvation" and s["reason"] == "rate" for s in signals)


@pytest.mark.parametrize("case", VECTORS["avro"], ids=lambda c: c["name"])
def test_avro_bodies_match_and_typescript_records_decode_here(case):
    """Through the real registry: the schema text TypeScript registers, under a fresh subject;
    the TS-written body decodes with Confluent's deserializer to the record, and Confluent's
    serializer writes the same body back."""
    registry = registry_client(REGISTRY)
    topic = f"t-py-avro-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    written = serializer(registry, SCHEMAS[case["schema"]])(case["value"], ctx)
    assert written[0] == 0
    schema_id = struct.unpack(">I", written[1:5])[0]
    assert written[5:].hex() == case["body"], "Python writes the bytes TypeScript writes"
    ts_payload = b"\x00" + struct.pack(">I", schema_id) + bytes.fromhex(case["body"])
    assert decode(deserializer(registry), ts_payload, topic) == json.loads(json.dumps(case["value"]))
