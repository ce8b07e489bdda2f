"""The accepted topic as a ``torch.utils.data.IterableDataset``, safe with DataLoader workers.

    ds = FlywheelDataset(prefix="flywheel", group_id="flywheel.ranker", trainer="ranker",
                         checkpoint_path="ranker.ckpt", features=FeatureConfig(dims=1024))
    model = restore(ds.restored) if ds.restored else fresh()
    for item in DataLoader(ds, batch_size=None, num_workers=2):
        loss = train(model, item.features, item.records)
        ds.commit(item, lambda cp: cp.write(state(model), arrays(model)))

Design: partitions split among the workers. Worker ``w`` of ``W`` reads, by manual assignment,
the partitions ``p`` with ``p % W == w`` of every topic (partition p of accepted and of labels
go to the same worker), from the checkpoint's offsets (else the group's committed offset, else
the beginning), and yields whole training batches (``batch_size=None``), featurized in the
worker — the featurizing is the CPU work worth spreading. Each batch carries its worker's
positions for its own partitions; the main process, which trains and alone writes the
checkpoint, merges them in ``commit``: a partition belongs to one worker, and a worker's
positions only grow, so the merged offsets cover exactly the batches trained, whatever order
the DataLoader interleaves workers in. Why not one reader feeding the workers: the workers are
separate processes started by the DataLoader, so a reader would have to live in one of them
and its records be shipped to the others — more copies, and the featurizing would still be
serial in that reader. Why not a consumer group per worker: a rebalance between members makes
records be read twice (at-least-once across a group, see docs/trainer-contract.md).

Exactly once holds when the DataLoader's batches are trained in the order they arrive (they
are) and ``commit`` is called with the last trained one. Use the same ``num_workers`` across
restarts or not: positions are per partition, so any split resumes exactly. Admission here is
staleness only (``staleness=``); the replay buffer and the starvation signal are per reader:
use ``TrainerClient`` (one reader) for them.

librdkafka is not fork-safe: a DataLoader forks its workers (Linux's default start method), and
a worker that opens a Kafka client in a child of a process holding one (a producer, a
``TrainerClient``) can crash. The dataset itself holds no client between calls (``commit`` opens
and closes one); close the others before iterating, or pass
``multiprocessing_context="spawn"`` to the DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from confluent_kafka import Consumer, KafkaException, TopicPartition

from .admission import StalenessConfig
from .checkpoint import Checkpoint, TopicPartitionOffset, read_checkpoint, write_checkpoint
from .client import CommitResult, Consumed, RecordKinds, TrainerClient, now_ms
from .features import FeatureConfig, featurize_batch
from .records import DEFAULT_BROKERS, DEFAULT_REGISTRY_URL, TopicCatalog


@dataclass
class DatasetBatch(RecordKinds):
    """One training batch from one worker (picklable: it crosses the worker's process boundary)."""

    worker: int
    seq: int
    records: list[Consumed]
    #: ``featurize`` of the batch's decisions' rollouts, float32 [N, D] (None without ``features``).
    features: torch.Tensor | None
    #: This worker's next offsets for its partitions after this batch.
    offsets: list[TopicPartitionOffset]
    skipped: int
    rejected: int


class _Writer:
    def __init__(self, dataset: "FlywheelDataset", offsets: list[TopicPartitionOffset]) -> None:
        self._dataset = dataset
        self.offsets = offsets
        self.written = False

    def write(self, state: Any, arrays: Mapping[str, Any] | None = None) -> None:
        write_checkpoint(self._dataset.checkpoint_path, Checkpoint(group=self._dataset.group_id, offsets=self.offsets, state=state, arrays=dict(arrays or {}), admission=None, saved_at=now_ms()))
        self.written = True


class FlywheelDataset(torch.utils.data.IterableDataset):
    """See the module doc."""

    def __init__(
        self,
        *,
        prefix: str,
        group_id: str,
        trainer: str,
        checkpoint_path: str,
        features: FeatureConfig | None = None,
        max_records: int = 256,
        max_wait_ms: int = 1000,
        brokers: str = DEFAULT_BROKERS,
        registry_url: str = DEFAULT_REGISTRY_URL,
        decisions: str | None = "accepted",
        labels: bool = False,
        staleness: StalenessConfig | None = None,
        stop_after_idle_ms: int | None = None,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.group_id = group_id
        self.trainer = trainer
        self.checkpoint_path = checkpoint_path
        self.features = features
        self.max_records = max_records
        self.max_wait_ms = max_wait_ms
        self.brokers = brokers
        self.registry_url = registry_url
        self.decisions = decisions
        self.labels = labels
        self.staleness = staleness
        self.stop_after_idle_ms = stop_after_idle_ms
        self.restored = read_checkpoint(checkpoint_path)
        if self.restored is not None and self.restored.group != group_id:
            raise ValueError(f'checkpoint {checkpoint_path} belongs to consumer group "{self.restored.group}", not "{group_id}"')
        # The main process's merged positions: what the next checkpoint records.
        self._positions: dict[tuple[str, int], int] = self.restored.offset_map() if self.restored else {}

    def _topics(self) -> list[str]:
        c = TopicCatalog(self.prefix)
        decision = None if self.decisions is None else (c.accepted if self.decisions == "accepted" else c.decisions)
        return [t for t in (decision, c.labels if self.labels else None) if t]

    def partitions(self, worker: int, workers: int) -> list[tuple[str, int]]:
        """The topic-partitions worker ``worker`` of ``workers`` reads."""
        probe = Consumer({"bootstrap.servers": self.brokers, "group.id": f"{self.group_id}.probe"})
        try:
            md = probe.list_topics(timeout=30)
        finally:
            probe.close()
        out = []
        for t in self._topics():
            if t not in md.topics:
                raise RuntimeError(f"topic {t} does not exist (the pipeline creates it: flywheel run)")
            out += [(t, p) for p in sorted(md.topics[t].partitions) if p % workers == worker]
        return out

    def __iter__(self) -> Iterator[DatasetBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        mine = self.partitions(worker, workers)
        if not mine:
            return
        client = TrainerClient.open(
            prefix=self.prefix,
            group_id=self.group_id,
            trainer=f"{self.trainer}.w{worker}",
            checkpoint_path=self.checkpoint_path,
            brokers=self.brokers,
            registry_url=self.registry_url,
            decisions=self.decisions,
            labels=self.labels,
            staleness=self.staleness,
            partitions=mine,
        )
        owned = set(mine)
        idle_since = now_ms()
        try:
            while True:
                batch = client.next_batch(self.max_records, self.max_wait_ms)
                if batch is None:
                    if self.stop_after_idle_ms is not None and now_ms() - idle_since >= self.stop_after_idle_ms:
                        return
                    continue
                idle_since = now_ms()
                decisions = batch.decisions
                feats = None
                if self.features is not None:
                    feats = torch.from_numpy(featurize_batch((d.value["rollout"] for d in decisions), self.features))
                yield DatasetBatch(
                    worker=worker,
                    seq=batch.seq,
                    records=batch.records,
                    features=feats,
                    offsets=[o for o in batch.offsets if (o.topic, o.partition) in owned],
                    skipped=len(batch.skipped),
                    rejected=len(batch.rejected),
                )
        finally:
            client.close()

    def commit(self, item: DatasetBatch, checkpoint: Callable[[_Writer], None]) -> CommitResult:
        """In the main process, after training on ``item`` (and every item before it): the
        checkpoint (``cp.write(state, arrays)``) with the merged offsets, then the Kafka commit
        (as a standalone consumer of the group: best effort, the checkpoint is authoritative)."""
        merged = dict(self._positions)
        for o in item.offsets:
            merged[(o.topic, o.partition)] = o.offset
        offsets = [TopicPartitionOffset(t, p, o) for (t, p), o in sorted(merged.items())]
        writer = _Writer(self, offsets)
        checkpoint(writer)
        if not writer.written:
            raise RuntimeError("checkpoint callback returned without writing the checkpoint: nothing committed")
        self._positions = merged
        # A short-lived committer: a librdkafka handle kept on the dataset would be copied into
        # every DataLoader worker the next time they are forked.
        committer = Consumer({"bootstrap.servers": self.brokers, "group.id": self.group_id, "enable.auto.commit": False})
        try:
            committer.commit(offsets=[TopicPartition(o.topic, o.partition, o.offset) for o in offsets], asynchronous=False)
            return CommitResult(offsets, "committed")
        except KafkaException:
            return CommitResult(offsets, "failed")
        finally:
            committer.close()

    @staticmethod
    def labels_of(item: DatasetBatch) -> np.ndarray:
        return np.array([r.value["value"] for r in item.labels], dtype=np.float32)
