"""A PyTorch-trained scorer swapped in live: a real pipeline worker (``node bin/flywheel.js run``)
scores rollouts written here (Avro from Python, decoded by TypeScript) with a first exported
model; the example trainer reads the accepted decisions and the labels, trains, exports ONNX
with torch.onnx and announces it; the running worker swaps it in, and its scores are the
torch model's on this side's features (byte-identical featurizing, checked live)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from conftest import BROKERS, REGISTRY, REPO, AvroProducer, rollout, unique_prefix, wait_until
from flywheel_trainer import FeatureConfig, feature_size, featurize, read_checkpoint
from flywheel_trainer.checkpoint import state_dict_from
from flywheel_trainer.records import TopicCatalog, decode, deserializer, registry_client
from flywheel_trainer.scorer import LogisticScorer, export_onnx

FEATURES = {"dims": 64, "wordNgrams": [1, 2], "charNgrams": [3], "rewardNames": ["correct"], "maxChars": 20000}


class Decisions:
    """Every decision on the topic, read_committed, by rollout id."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.deser = deserializer(registry_client(REGISTRY))
        self.consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"{topic}.reader", "isolation.level": "read_committed", "enable.auto.commit": False})
        parts = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.by_id: dict[str, list[dict]] = {}

    def poll(self) -> None:
        for m in self.consumer.consume(num_messages=500, timeout=0.5):
            if m.error() is None:
                d = decode(self.deser, m.value(), self.topic)
                self.by_id.setdefault(d["rollout"]["id"], []).append(d)

    def wait(self, ids: list[str], timeout: float = 120) -> list[dict]:
        def seen() -> bool:
            self.poll()
            return all(i in self.by_id for i in ids)

        wait_until(seen, f"decisions of {len(ids)} rollouts", timeout)
        return [self.by_id[i][0] for i in ids]


def test_a_pytorch_model_is_announced_and_swapped_in_live(tmp_path: Path):
    prefix = unique_prefix("swap")
    catalog = TopicCatalog(prefix)
    cfg = FeatureConfig.from_json(FEATURES)
    v0 = tmp_path / "scorer-torch-0.onnx"
    export_onnx(LogisticScorer(feature_size(cfg)), str(v0), "torch-0")
    config = {
        "name": "pysdk",
        "run": prefix,
        "topics": {"prefix": prefix, "partitions": 3},
        "source": {"fromBeginning": True, "tickMs": 300},
        "features": FEATURES,
        "operators": [{"type": "validate"}, {"type": "onnx-score", "model": {"name": "scorer", "path": str(v0)}}],
        "clickhouse": {"path": str(tmp_path / "clickhouse")},
    }
    config_file = tmp_path / "pipeline.json"
    config_file.write_text(json.dumps(config))
    log_file = tmp_path / "worker.log"
    env = {**os.environ, "KAFKA_BROKERS": BROKERS, "SCHEMA_REGISTRY_URL": REGISTRY}
    with open(log_file, "wb") as log:
        worker = subprocess.Popen(["node", "bin/flywheel.js", "run", "--config", str(config_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "pysdk: partitions [" in log_file.read_text(errors="replace") or worker.poll() is not None, "the worker to join its group", 180)
        assert worker.poll() is None, log_file.read_text(errors="replace")

        run = prefix
        data = [rollout(i, run, correct=i % 2 == 0) for i in range(240)]
        producer = AvroProducer()
        producer.send(catalog.rollouts, "rollout", ((r["group_id"], r) for r in data))
        producer.send(catalog.labels, "label", ((r["id"], {"rollout_id": r["id"], "value": r["rewards"]["correct"], "verifier": "exact", "at": 1_764_000_000_000}) for r in data))
        producer.flush()
        decisions = Decisions(catalog.decisions)
        first = decisions.wait([r["id"] for r in data])
        assert {d["scorer_version"] for d in first} == {"torch-0"}
        assert all(abs(d["scores"]["model"] - 0.5) < 1e-6 for d in first)

        trainer = subprocess.run(
            [sys.executable, "-m", "flywheel_trainer.example_trainer", "--prefix", prefix, "--features", json.dumps(FEATURES), "--checkpoint", str(tmp_path / "scorer.ckpt"),
             "--out-dir", str(tmp_path / "models"), "--announce-every", "200", "--stop-after-announcements", "1", "--max-records", "64"],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert trainer.returncode == 0, trainer.stderr
        cp = read_checkpoint(str(tmp_path / "scorer.ckpt"))
        update = cp.state["last_update"]
        assert update["version"] == "torch-1" and update["metrics"]["examples"] >= 200

        # Probe until a decision names torch-1: from then on every micro-batch scores with it.
        probes: list[dict] = []

        def swapped() -> bool:
            probe = rollout(1000 + len(probes), f"{run}-probe", correct=len(probes) % 2 == 0)
            probes.append(probe)
            producer.send(catalog.rollouts, "rollout", [(probe["group_id"], probe)])
            producer.flush()
            return decisions.wait([probe["id"]])[0]["scorer_version"] == "torch-1"

        wait_until(swapped, "the announced torch model to score", 120)
        assert "scoring with scorer torch-1" in log_file.read_text(errors="replace")
        after = [rollout(2000 + i, f"{run}-after", correct=i % 2 == 0) for i in range(20)]
        producer.send(catalog.rollouts, "rollout", ((r["group_id"], r) for r in after))
        producer.flush()
        scored = decisions.wait([r["id"] for r in after])
        assert {d["scorer_version"] for d in scored} == {"torch-1"}

        # The worker's scores are the torch model's on the vectors featurized here.
        model = LogisticScorer(feature_size(cfg))
        model.load_state_dict(state_dict_from(cp.arrays, cp.state["shapes"]))
        with torch.no_grad():
            expected = model(torch.from_numpy(np.stack([featurize(r, cfg) for r in after]))).numpy().reshape(-1)
        got = np.array([d["scores"]["model"] for d in scored])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        # And it learned the labels: right answers score above wrong ones.
        assert min(got[0::2]) > 0.5 > max(got[1::2])
        # No rollout decided twice across the swap.
        decisions.poll()
        assert all(len(v) == 1 for v in decisions.by_id.values())
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
