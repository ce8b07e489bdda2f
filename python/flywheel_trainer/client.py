"""The trainer client: Flywheel's training data read exactly once across crashes, as
``trainers/client.ts`` gives it to TypeScript trainers (``docs/trainer-contract.md``).

    client = TrainerClient.open(prefix="flywheel", group_id="flywheel.ranker", trainer="ranker",
                                checkpoint_path="ranker.ckpt", labels=True)
    model = load(client.restored) if client.restored else fresh()
    for batch in client.batches(max_records=256, max_wait_ms=1000):
        train(model, batch.decisions, batch.labels)
        client.commit(batch, lambda cp: cp.write(model_state(model), model_arrays(model)))

Protocol. ``commit(batch, checkpoint)`` first has the trainer write its checkpoint — the model
state with the offsets the batch covers, through ``cp.write``, which replaces the file
atomically — and only then commits those offsets to the consumer group. On open the
checkpoint's offsets win: every partition it names is read from exactly there (the assignment
callback sets the offset), whatever the group has committed. A trainer killed anywhere resumes
after its last checkpoint with that checkpoint's model: no example trained twice, none skipped.

Reads are read_committed (the pipeline writes in transactions). Fetching is synchronous, in
``batches()``: librdkafka heartbeats from its own thread, but a trainer that spends more than
``max_poll_interval_ms`` (default 30 min) on one batch leaves the group. A position that cannot
be read (records deleted by retention) raises instead of skipping (``auto.offset.reset`` is
"error" for positions this client sets).

With ``partitions=`` the client reads those partitions by manual assignment, without group
membership (the DataLoader workers of ``FlywheelDataset`` each read their share this way);
its Kafka commits then go to the group as a standalone consumer.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from .admission import (
    AnnouncedVersions,
    LagFunction,
    ReplayBuffer,
    ReplayConfig,
    StalenessConfig,
    StarvationConfig,
    StarvationMonitor,
    admit_by_staleness,
)
from .checkpoint import Checkpoint, TopicPartitionOffset, read_checkpoint, write_checkpoint
from .records import (
    DEFAULT_BROKERS,
    DEFAULT_REGISTRY_URL,
    MODEL_UPDATE_SCHEMA,
    TopicCatalog,
    UndecodableRecord,
    decode,
    deserializer,
    registry_client,
    serializer,
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Consumed:
    """One consumed record: ``kind`` "decision" or "label", its coordinates and decoded value."""

    kind: str
    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp: int
    value: dict

    def to_json(self) -> dict:
        return {"kind": self.kind, "topic": self.topic, "partition": self.partition, "offset": str(self.offset), "key": self.key, "timestamp": self.timestamp, "value": self.value}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Consumed":
        return Consumed(d.get("kind", "decision"), d["topic"], int(d["partition"]), int(d["offset"]), d.get("key"), int(d["timestamp"]), d["value"])


class RecordKinds:
    """A batch's records split by kind (accepted decisions, labels); needs ``records``."""

    records: list[Consumed]

    @property
    def decisions(self) -> list[Consumed]:
        return [r for r in self.records if r.kind == "decision"]

    @property
    def labels(self) -> list[Consumed]:
        return [r for r in self.records if r.kind == "label"]


@dataclass
class TrainingBatch(RecordKinds):
    """One training batch; its records are covered by ``offsets`` once committed."""

    seq: int
    #: Fresh admitted records in arrival order (offset order within a partition).
    records: list[Consumed]
    #: Consumed but not admitted: (record, reason, lag). Covered by the offsets, never trained.
    rejected: list[tuple[Consumed, str, int | None]]
    #: Not decodable: (topic, partition, offset, reason).
    skipped: list[tuple[str, int, int, str]]
    #: Records drawn again from the replay buffer (move no offset): {"record", "uses", "priority"}.
    replayed: list[dict]
    #: Per topic-partition the next offset after this batch, cumulative: what its commit records.
    offsets: list[TopicPartitionOffset]
    #: The replay buffer's state after this batch (saved in its checkpoint).
    admission: Any = None



class CheckpointWriter:
    """Handed to ``commit``'s callback: ``write(state, arrays)`` writes the checkpoint."""

    def __init__(self, path: str, group: str, batch: TrainingBatch) -> None:
        self.path = path
        self.group = group
        self.batch = batch
        self.offsets = batch.offsets
        self.written = False

    def write(self, state: Any, arrays: Mapping[str, Any] | None = None) -> None:
        """Writes the checkpoint atomically; call it once the model reflects the whole batch."""
        write_checkpoint(self.path, Checkpoint(group=self.group, offsets=list(self.offsets), state=state, arrays=dict(arrays or {}), admission={"replay": self.batch.admission}, saved_at=now_ms()))
        self.written = True


@dataclass
class CommitResult:
    offsets: list[TopicPartitionOffset]
    #: "committed", "failed" (the checkpoint stands) or "nothing-assigned".
    kafka: str


@dataclass
class Metrics:
    batches: int = 0
    consumed: int = 0
    admitted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    replayed: int = 0
    skipped: int = 0
    checkpoints: int = 0
    kafka_commits: int = 0
    kafka_commit_failures: int = 0
    last_kafka_commit_error: str | None = None
    last_starvation_signal: dict | None = None


class TrainerClient:
    """See the module doc. Make one with ``TrainerClient.open(...)``."""

    def __init__(
        self,
        *,
        prefix: str,
        group_id: str,
        trainer: str,
        checkpoint_path: str,
        brokers: str = DEFAULT_BROKERS,
        registry_url: str = DEFAULT_REGISTRY_URL,
        decisions: str | None = "accepted",
        labels: bool = False,
        from_beginning: bool = True,
        staleness: StalenessConfig | None = None,
        replay: ReplayConfig | None = None,
        starvation: StarvationConfig | None = None,
        versions: AnnouncedVersions | LagFunction | None = None,
        partitions: Sequence[tuple[str, int]] | None = None,
        max_poll_interval_ms: int = 30 * 60_000,
        session_timeout_ms: int = 10_000,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.catalog = TopicCatalog(prefix)
        self.group_id = group_id
        self.trainer = trainer
        self.checkpoint_path = checkpoint_path
        self._brokers = brokers
        if decisions not in ("accepted", "decisions", None):
            raise ValueError(f'decisions must be "accepted", "decisions" or None, got {decisions!r}')
        self.decision_topic = None if decisions is None else (self.catalog.accepted if decisions == "accepted" else self.catalog.decisions)
        self.topics = [t for t in (self.decision_topic, self.catalog.labels if labels else None) if t]
        if not self.topics:
            raise ValueError("trainer client: nothing to read (decisions=None and labels=False)")
        self.restored = read_checkpoint(checkpoint_path)
        if self.restored is not None and self.restored.group != group_id:
            raise ValueError(f'checkpoint {checkpoint_path} belongs to consumer group "{self.restored.group}", not "{group_id}"')
        self.metrics = Metrics()
        self._registry = registry_client(registry_url)
        self._deser = deserializer(self._registry)
        self._update_ser = serializer(self._registry, MODEL_UPDATE_SCHEMA)
        self._from_beginning = from_beginning
        self._staleness = staleness
        saved = ((self.restored.admission or {}).get("replay") if self.restored else None) if replay else None
        self._replay: ReplayBuffer | None = None if replay is None else (ReplayBuffer.from_snapshot(replay, saved) if saved else ReplayBuffer(replay))
        self._starvation = starvation
        self._monitor = StarvationMonitor(trainer, starvation, now_ms()) if starvation else None
        self._last_check = 0
        self._local_versions = AnnouncedVersions() if staleness and versions is None else None
        self._versions = versions if versions is not None else self._local_versions
        # Next offset not yet handed to the trainer, per (topic, partition).
        self._yielded: dict[tuple[str, int], int] = dict(self.restored.offset_map()) if self.restored else {}
        self._assigned: set[tuple[str, int]] = set()
        self._pending: list[Consumed | tuple[str, int, int, str]] = []
        self._seq = 0
        self._last_committed_seq = 0
        self._issued: dict[int, TrainingBatch] = {}
        self._closed = False
        base = {"bootstrap.servers": brokers, "client.id": f"flywheel-trainer-{trainer}"}
        self._producer = Producer({**base, "enable.idempotence": True, "acks": "all"})
        self._consumer = Consumer(
            {
                **base,
                "group.id": group_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # Positions this client sets must be readable: out of range raises, never skips.
                "auto.offset.reset": "error",
                # As range assigns partition p of every topic to one member, a decision's partition
                # and its label's go to the same trainer (the TS client's co-partition assigner).
                "partition.assignment.strategy": "range",
                "session.timeout.ms": session_timeout_ms,
                "max.poll.interval.ms": max_poll_interval_ms,
                "allow.auto.create.topics": False,
                **(consumer_config or {}),
            }
        )
        self._updates: Consumer | None = None
        self._manual = list(partitions) if partitions is not None else None

    # ─── Opening ─────────────────────────────────────────────────────────────────────────────

    @classmethod
    def open(cls, **options: Any) -> "TrainerClient":
        """Reads the checkpoint, checks the topics, follows model-updates (for staleness), joins
        the group (or assigns ``partitions``). Keyword arguments as ``__init__``."""
        client = cls(**options)
        try:
            client._start()
        except BaseException:
            client.close()
            raise
        return client

    def _start(self) -> None:
        metadata = self._consumer.list_topics(timeout=30)
        missing = [t for t in (*self.topics, self.catalog.model_updates) if t not in metadata.topics]
        if missing:
            raise RuntimeError(f"trainer client: topics {', '.join(missing)} do not exist (the pipeline creates them: flywheel run)")
        if self._local_versions is not None:
            self._follow_updates(catch_up=True)
        if self._manual is not None:
            tps = [TopicPartition(t, p) for t, p in self._manual]
            self._consumer.assign(self._positioned(tps))
            self._assigned = {(t, p) for t, p in self._manual}
        else:
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _positioned(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Where each partition is read from: our position (the checkpoint's, or what we handed
        out), else the group's committed offset, else the beginning (or the end)."""
        unknown = [TopicPartition(tp.topic, tp.partition) for tp in tps if (tp.topic, tp.partition) not in self._yielded]
        committed: dict[tuple[str, int], int] = {}
        if unknown:
            for c in self._consumer.committed(unknown, timeout=30):
                if c.offset >= 0:
                    committed[(c.topic, c.partition)] = c.offset
        out = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            if key in self._yielded:
                offset = self._yielded[key]
            elif key in committed:
                offset = committed[key]
            else:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)
                offset = low if self._from_beginning else high
            # From now on the partition has a position, so every checkpoint names it: a restart
            # reads it from there even if the group's offsets move (the checkpoint wins).
            self._yielded[key] = offset
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closed:  # an assignment that arrives while leaving the group: nothing is read
            return
        positioned = self._positioned(partitions)
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        consumer.assign(positioned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        # Fetched but not handed out: the next owner (or we, on getting it back) reads it again.
        self._pending = [e for e in self._pending if (_coords(e)[0], _coords(e)[1]) not in lost]
        self._assigned -= lost
        try:
            consumer.unassign()
        except KafkaException:
            pass

    def _follow_updates(self, catch_up: bool = False) -> None:
        """Reads model-updates into the local versions (at open: up to its end)."""
        topic = self.catalog.model_updates
        if self._updates is None:
            self._updates = Consumer({"bootstrap.servers": self._consumer_bootstrap(), "group.id": f"{self.group_id}.versions", "enable.auto.commit": False, "isolation.level": "read_committed"})
            parts = self._updates.list_topics(topic, timeout=30).topics[topic].partitions
            self._updates.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            self._updates_end = {p: self._updates.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
        deadline = time.monotonic() + 60
        while True:
            msgs = self._updates.consume(num_messages=500, timeout=0.2 if catch_up else 0)
            for m in msgs:
                if m.error():
                    continue
                try:
                    u = decode(self._deser, m.value(), topic)
                    self._local_versions.announce(u["model"], u["version"])  # type: ignore[union-attr]
                except UndecodableRecord as err:
                    print(f"[trainer {self.trainer}] skipping a model update that does not decode: {err}", file=sys.stderr)
            if not catch_up:
                return
            positions = {tp.partition: tp.offset for tp in self._updates.position([TopicPartition(topic, p) for p in self._updates_end])}
            if all(positions.get(p, -1) >= end or end == 0 for p, end in self._updates_end.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"trainer client: could not read {topic} to its end within 60 s")

    def _consumer_bootstrap(self) -> str:
        return self._brokers

    # ─── Batches ─────────────────────────────────────────────────────────────────────────────

    def batches(self, max_records: int = 256, max_wait_ms: int = 1000, empty_batches: bool = False) -> Iterator[TrainingBatch]:
        """Training batches until ``close()`` (or the caller stops iterating)."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        while not self._closed:
            batch = self.next_batch(max_records, max_wait_ms, empty_batches)
            if batch is not None:
                yield batch

    def next_batch(self, max_records: int = 256, max_wait_ms: int = 1000, empty_batches: bool = False) -> TrainingBatch | None:
        """One batch: up to ``max_records`` fresh records, handed out when full or after
        ``max_wait_ms`` with what there is (None when nothing came and ``empty_batches`` is off)."""
        deadline = time.monotonic() + max_wait_ms / 1000
        while len(self._pending) < max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._fetch(max_records - len(self._pending), min(left, 0.25))
            self._maybe_check_starvation()
        now = now_ms()
        if not self._pending and not empty_batches and not (self._replay is not None and self._replay.eligible(now)):
            return None
        return self._form(max_records, now)

    def _fetch(self, n: int, timeout: float) -> None:
        msgs = self._consumer.consume(num_messages=n, timeout=timeout)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.code() == KafkaError._AUTO_OFFSET_RESET or err.code() == KafkaError.OFFSET_OUT_OF_RANGE:
                    raise KafkaException(err)  # the position was deleted (retention): resuming would skip records
                if err.fatal() or not err.retriable():
                    raise KafkaException(err)
                continue
            key = (m.topic(), m.partition())
            if key not in self._assigned:
                continue
            self._pending.append(self._decode(m))
        if self._local_versions is not None:
            self._follow_updates()

    def _decode(self, m: Any) -> Consumed | tuple[str, int, int, str]:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        for attempt in range(8):
            try:
                value = decode(self._deser, m.value(), topic)
                break
            except UndecodableRecord as err:
                return (topic, partition, offset, str(err))
            except Exception:  # the registry could not answer: not the record's fault, retry
                if attempt == 7:
                    raise
                time.sleep(min(2.0, 0.2 * 2**attempt))
        key = m.key()
        kind = "decision" if topic == self.decision_topic else "label"
        return Consumed(kind, topic, partition, offset, key.decode("utf-8", "replace") if key is not None else None, m.timestamp()[1], value)

    def _form(self, max_records: int, now: int, draw: bool = True) -> TrainingBatch:
        taken, self._pending = self._pending[:max_records], self._pending[max_records:]
        records: list[Consumed] = []
        rejected: list[tuple[Consumed, str, int | None]] = []
        skipped: list[tuple[str, int, int, str]] = []
        for e in taken:
            topic, partition, offset = _coords(e)
            self._yielded[(topic, partition)] = offset + 1
            if not isinstance(e, Consumed):
                skipped.append(e)
                continue
            verdict = self._admit(e)
            if verdict is None:
                records.append(e)
            else:
                rejected.append((e, verdict[0], verdict[1]))
        replayed: list[dict] = []
        if self._replay is not None and draw:
            replayed = [{"record": Consumed.from_json(d["value"]), "uses": d["uses"], "priority": d["priority"]} for d in self._replay.draw(self._replay.config.per_batch, now)]
            score_name = self._replay.config.score_name
            self._replay.add(
                (
                    {"id": d.value["rollout"]["id"], "value": d.to_json(), "at": d.value["rollout"]["created_at"], "score": 0 if score_name is None else d.value["scores"].get(score_name, 0)}
                    for d in records
                    if d.kind == "decision"
                ),
                now,
            )
        offsets = [TopicPartitionOffset(t, p, o) for (t, p), o in sorted(self._yielded.items())]
        self._seq += 1
        batch = TrainingBatch(self._seq, records, rejected, skipped, replayed, offsets, self._replay.snapshot() if self._replay else None)
        self._issued[batch.seq] = batch
        by_reason: dict[str, int] = {}
        for _, reason, _lag in rejected:
            by_reason[reason] = by_reason.get(reason, 0) + 1
        m = self.metrics
        m.batches += 1
        m.consumed += len(taken)
        m.admitted += len(records)
        m.replayed += len(replayed)
        m.skipped += len(skipped)
        for reason, n in by_reason.items():
            m.rejected[reason] = m.rejected.get(reason, 0) + n
        if self._monitor is not None:
            self._monitor.record(len(records), now, by_reason)
        return batch

    def empty_batch(self) -> TrainingBatch:
        """A batch with no records at the current position (to checkpoint between batches)."""
        return self._form(0, now_ms(), draw=False)

    def _admit(self, record: Consumed) -> tuple[str, int | None] | None:
        if record.kind != "decision" or self._staleness is None or self._versions is None:
            return None
        verdict = admit_by_staleness(record.value["rollout"], self._staleness, self._versions)
        return None if verdict.admitted else (verdict.reason or "stale", verdict.lag)

    def lag(self, model: str, version: str) -> int | None:
        v = self._versions
        if v is None:
            return None
        return v.lag(model, version) if isinstance(v, AnnouncedVersions) else v(model, version)

    # ─── Commit ──────────────────────────────────────────────────────────────────────────────

    def commit(self, batch: TrainingBatch, checkpoint: Callable[[CheckpointWriter], None]) -> CommitResult:
        """Checkpoint, then Kafka commit. ``checkpoint`` must call ``cp.write(state, arrays)``
        with the model after training on everything up to ``batch`` and nothing after; if it
        raises or returns without writing, nothing is committed. A Kafka commit failure after
        the checkpoint is reported in the result and the metrics, not raised."""
        if self._issued.get(batch.seq) is not batch:
            raise ValueError("commit: this batch did not come from this client")
        if batch.seq < self._last_committed_seq:
            raise ValueError(f"commit: batch {batch.seq} is older than the committed batch {self._last_committed_seq}")
        writer = CheckpointWriter(self.checkpoint_path, self.group_id, batch)
        checkpoint(writer)
        if not writer.written:
            raise RuntimeError(f"checkpoint callback for batch {batch.seq} returned without writing the checkpoint: nothing committed")
        self.metrics.checkpoints += 1
        self._last_committed_seq = batch.seq
        for seq in [s for s in self._issued if s <= batch.seq]:
            del self._issued[seq]
        owned = [o for o in batch.offsets if (o.topic, o.partition) in self._assigned]
        if not owned:
            return CommitResult(batch.offsets, "nothing-assigned")
        try:
            self._consumer.commit(offsets=[TopicPartition(o.topic, o.partition, o.offset) for o in owned], asynchronous=False)
            self.metrics.kafka_commits += 1
            return CommitResult(batch.offsets, "committed")
        except KafkaException as err:
            self.metrics.kafka_commit_failures += 1
            self.metrics.last_kafka_commit_error = str(err)
            print(f"[trainer {self.trainer}] checkpoint written, Kafka offset commit failed (the checkpoint stands): {err}", file=sys.stderr)
            return CommitResult(batch.offsets, "failed")

    # ─── Publishing ──────────────────────────────────────────────────────────────────────────

    def announce(self, model: str, version: str, artifact: str, checksum: str = "", metrics: Mapping[str, float] | None = None, at: int | None = None) -> dict:
        """Publishes a ModelUpdate (Avro, registry wire format, key = model name) and waits for
        the broker; the pipeline's onnx-score operators following ``model`` hot-swap it."""
        if not model or not version:
            raise ValueError("a model update needs a model name and a version")
        update = {"model": model, "version": version, "artifact": artifact, "checksum": checksum, "metrics": {k: float(v) for k, v in (metrics or {}).items()}, "at": now_ms() if at is None else at}
        topic = self.catalog.model_updates
        value = self._update_ser(update, SerializationContext(topic, MessageField.VALUE))
        self._produce(topic, model, value)
        if self._local_versions is not None:
            self._local_versions.announce(model, version)
        return update

    def publish_control(self, key: str, value: Mapping[str, Any]) -> None:
        """A JSON message on the control topic."""
        self._produce(self.catalog.control, key, json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        errors: list[Any] = []
        self._producer.produce(topic, key=key.encode("utf-8"), value=value, on_delivery=lambda err, _m: errors.append(err))
        left = self._producer.flush(30)
        if left > 0:
            raise TimeoutError(f"publishing to {topic}: not delivered within 30 s")
        if errors and errors[0] is not None:
            raise KafkaException(errors[0])

    def _maybe_check_starvation(self) -> None:
        if self._monitor is None or self._closed:
            return
        now = now_ms()
        if now - self._last_check < self._starvation.check_every_ms:  # type: ignore[union-attr]
            return
        self._last_check = now
        signal = self._monitor.check(now)
        if signal is None:
            return
        self.metrics.last_starvation_signal = signal
        if self._starvation.publish:  # type: ignore[union-attr]
            try:
                self.publish_control(f"starvation.{self.trainer}", signal)
            except Exception as err:  # a missed signal is repeated; it must not stop training
                print(f"[trainer {self.trainer}] could not publish {signal['kind']}: {err}", file=sys.stderr)

    def starvation_status(self) -> dict | None:
        return self._monitor.status(now_ms()) if self._monitor else None

    @property
    def replay_buffer(self) -> ReplayBuffer | None:
        return self._replay

    @property
    def assigned(self) -> list[tuple[str, int]]:
        return sorted(self._assigned)

    def close(self) -> None:
        """Leaves the group and disconnects. Commits nothing: the next run resumes from the checkpoint."""
        if self._closed:
            return
        self._closed = True
        for c in (self._consumer, self._updates):
            if c is not None:
                try:
                    c.close()
                except (KafkaException, RuntimeError):
                    pass
        self._producer.flush(10)

    def __enter__(self) -> "TrainerClient":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def _coords(e: Consumed | tuple[str, int, int, str]) -> tuple[str, int, int]:
    if isinstance(e, Consumed):
        return e.topic, e.partition, e.offset
    return e[0], e[1], e[2]
