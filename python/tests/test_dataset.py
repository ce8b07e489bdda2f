"""FlywheelDataset under a DataLoader with 2 worker processes (partitions split among them): a
run stopped after a few batches, with batches prefetched but never trained, and a second run
resuming from the checkpoint train every record exactly once; the features arrive as tensors."""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from conftest import BROKERS, REGISTRY, AvroProducer, create_topics, decision, rollout, unique_prefix
from flywheel_trainer import FeatureConfig, FlywheelDataset, feature_size, read_checkpoint
from flywheel_trainer.records import TopicCatalog

CFG = FeatureConfig(dims=32, reward_names=("correct",))


def dataset(prefix: str, checkpoint: Path, **kw) -> FlywheelDataset:
    return FlywheelDataset(prefix=prefix, group_id=f"{prefix}.ds", trainer="ds", checkpoint_path=str(checkpoint), features=CFG, max_records=5, max_wait_ms=300, brokers=BROKERS, registry_url=REGISTRY, **kw)


def train(ds: FlywheelDataset, state: dict, limit: int | None) -> int:
    items = 0
    for item in DataLoader(ds, batch_size=None, num_workers=2):
        assert item.features is not None and item.features.shape == (len(item.decisions), feature_size(CFG)) and item.features.dtype == torch.float32
        for d in item.decisions:
            rid = d.value["rollout"]["id"]
            state[rid] = state.get(rid, 0) + 1
        ds.commit(item, lambda cp: cp.write(state))
        items += 1
        if limit is not None and items >= limit:
            break  # the workers have prefetched more: read again by the next run
    return items


def test_dataloader_workers_read_every_record_once_across_a_restart(tmp_path: Path):
    prefix = unique_prefix("dataset")
    catalog = TopicCatalog(prefix)
    create_topics(catalog)
    run = prefix
    rows = [rollout(i, run) for i in range(90)]
    producer = AvroProducer()
    producer.send(catalog.accepted, "decision", ((r["group_id"], decision(r, run)) for r in rows))
    producer.flush()
    # Gone before the DataLoader forks its workers: librdkafka is not fork-safe (see dataset.py).
    del producer
    gc.collect()
    checkpoint = tmp_path / "ds.ckpt"

    state: dict[str, int] = {}
    assert train(dataset(prefix, checkpoint), state, limit=4) == 4
    first = read_checkpoint(str(checkpoint))
    assert 0 < sum(first.state.values()) < len(rows)

    resumed = dataset(prefix, checkpoint, stop_after_idle_ms=2500)
    state = dict(resumed.restored.state)
    train(resumed, state, limit=None)
    final = read_checkpoint(str(checkpoint)).state
    assert sorted(final) == sorted(r["id"] for r in rows)
    assert [rid for rid, n in final.items() if n != 1] == []
