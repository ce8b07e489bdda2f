"""Admission through the client on the real services: staleness by the versions announced on
model-updates (this client's own announcements included), the replay buffer (saved in the
checkpoint and restored), and the starvation signal published on the control topic."""

from __future__ import annotations

import json
import math
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from conftest import BROKERS, REGISTRY, AvroProducer, create_topics, decision, rollout, unique_prefix, wait_until
from flywheel_trainer import ReplayConfig, StalenessConfig, StarvationConfig, TrainerClient
from flywheel_trainer.records import TopicCatalog


def open_client(prefix: str, checkpoint: Path, **kw) -> TrainerClient:
    return TrainerClient.open(prefix=prefix, group_id=f"{prefix}.adm", trainer="adm", checkpoint_path=str(checkpoint), brokers=BROKERS, registry_url=REGISTRY, **kw)


def test_staleness_replay_and_starvation(tmp_path: Path):
    prefix = unique_prefix("admission")
    catalog = TopicCatalog(prefix)
    create_topics(catalog)
    checkpoint = tmp_path / "adm.ckpt"
    # Versions v1..v3 announced before the client starts (it reads model-updates to its end).
    with open_client(prefix, checkpoint) as announcer:
        for v in ("v1", "v2", "v3"):
            announcer.announce("policy", v, f"/models/{v}.onnx")
    run = prefix
    rows = [rollout(0, run, model_version="v1"), rollout(1, run, model_version="v3"), rollout(2, run, model_version="v9"), rollout(3, run, model_version="v1", tags={"source": "offline"})]
    producer = AvroProducer()
    producer.send(catalog.accepted, "decision", ((r["group_id"], decision(r, run)) for r in rows))
    producer.flush()

    staleness = StalenessConfig(tag="source", max_lag={"offline": math.inf}, default_max_lag=1, on_unknown="reject")
    replay = ReplayConfig(capacity=10, max_reuse=1, cool_down_ms=0, per_batch=2, seed=3)
    starvation = StarvationConfig(idle_ms=1500, check_every_ms=100, repeat_ms=60_000)
    client = open_client(prefix, checkpoint, staleness=staleness, replay=replay, starvation=starvation)
    try:
        seen: dict[str, str] = {}
        batches = []
        while len(seen) < len(rows):
            batch = client.next_batch(max_records=10, max_wait_ms=500)
            if batch is None:
                continue
            batches.append(batch)
            seen.update({d.value["rollout"]["id"]: "admitted" for d in batch.decisions})
            seen.update({r.value["rollout"]["id"]: reason for r, reason, _lag in batch.rejected})
        assert seen == {rows[0]["id"]: "stale:model_version", rows[1]["id"]: "admitted", rows[2]["id"]: "stale:unknown_version", rows[3]["id"]: "admitted"}
        assert client.lag("policy", "v1") == 2

        # A new announcement makes v3 one behind: still admitted under default_max_lag 1.
        client.announce("policy", "v4", "/models/v4.onnx")
        assert client.lag("policy", "v3") == 1

        # The admitted decisions went into the replay buffer: each is replayed once (max_reuse 1).
        batch = client.next_batch(max_records=10, max_wait_ms=300, empty_batches=True)
        replayed = [r["record"].value["rollout"]["id"] for b in (*batches, batch) for r in b.replayed]
        assert sorted(replayed) == sorted([rows[1]["id"], rows[3]["id"]])
        client.commit(batch, lambda cp: cp.write({"ok": True}))

        # Nothing admitted for idle_ms: the starvation signal goes out on the control topic.
        wait_until(lambda: client.next_batch(max_records=10, max_wait_ms=200) is None and client.metrics.last_starvation_signal is not None, "a starvation signal", 30)
        signal = client.metrics.last_starvation_signal
        assert signal["kind"] == "starvation" and signal["reason"] == "idle" and signal["trainer"] == "adm"
    finally:
        client.close()

    reader = Consumer({"bootstrap.servers": BROKERS, "group.id": f"{prefix}.control-reader", "enable.auto.commit": False})
    reader.assign([TopicPartition(catalog.control, 0, OFFSET_BEGINNING)])
    messages = []
    wait_until(lambda: bool(messages.extend(m for m in reader.consume(10, 0.5) if m.error() is None)) or bool(messages), "the control message", 30)
    reader.close()
    assert messages[0].key() == b"starvation.adm"
    assert json.loads(messages[0].value())["kind"] == "starvation"

    # The replay buffer's state came back with the checkpoint: used-up items are gone.
    restored = open_client(prefix, checkpoint, staleness=staleness, replay=replay)
    try:
        assert restored.replay_buffer is not None and len(restored.replay_buffer) == 0
        assert restored.restored.state == {"ok": True}
    finally:
        restored.close()
