"""Exactly once across SIGKILLs, on the real Kafka and registry: a Python trainer process killed
before a checkpoint, between the checkpoint and the Kafka commit, and after the commit — and
restarted once with the group's offsets moved past its checkpoint — ends with every committed
record trained exactly once, aborted transactions never, undecodable records skipped once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from conftest import BROKERS, AvroProducer, create_topics, decision, rollout, unique_prefix, wait_until
from flywheel_trainer import read_checkpoint
from flywheel_trainer.records import TopicCatalog

PROGRAM = Path(__file__).parent / "programs" / "crash_trainer.py"


def run_trainer(prefix: str, group: str, checkpoint: Path, mode: str, k: int, expect: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAM), prefix, group, str(checkpoint), mode, str(k), str(expect)], capture_output=True, text=True, timeout=180, env=os.environ.copy())


def test_sigkill_before_between_and_after_checkpoints_trains_every_record_once(tmp_path: Path):
    prefix = unique_prefix("crash")
    catalog = TopicCatalog(prefix)
    create_topics(catalog)
    run = prefix
    producer = AvroProducer(transactional=True)
    ids = []
    for t in range(14):
        batch = [rollout(t * 10 + i, run) for i in range(10)]
        aborted = t in (3, 9)
        if not aborted:
            ids += [r["id"] for r in batch]

        def fill(batch=batch, t=t):
            producer.send(catalog.accepted, "decision", ((r["group_id"], decision(r, run)) for r in batch))
            if t % 5 == 0:
                producer.raw(catalog.accepted, f"garbage-{t}", b"not avro at all")

        producer.transaction(commit=not aborted, fill=fill)
    garbage = sum(1 for t in range(14) if t % 5 == 0 and t not in (3, 9))
    group = f"{prefix}.trainer"
    checkpoint = tmp_path / "trainer.ckpt"

    killed = run_trainer(prefix, group, checkpoint, "before", 3, len(ids))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = read_checkpoint(str(checkpoint))
    assert first is not None and sum(first.state["trained"].values()) > 0, "two batches were checkpointed before the kill"

    # Move the group's offsets to the end: the checkpoint's offsets must win, or records are skipped.
    mover = Consumer({"bootstrap.servers": BROKERS, "group.id": group, "enable.auto.commit": False})
    ends = [TopicPartition(catalog.accepted, p, mover.get_watermark_offsets(TopicPartition(catalog.accepted, p), timeout=30)[1]) for p in range(3)]
    # (Rejected while the killed member's session lasts: a standalone commit needs an empty group.)
    def moved() -> bool:
        try:
            mover.commit(offsets=ends, asynchronous=False)
            return True
        except KafkaException:
            return False

    wait_until(moved, "the group to accept the moved offsets", 60)
    mover.close()

    for mode, k in (("between", 2), ("after", 3)):
        killed = run_trainer(prefix, group, checkpoint, mode, k, len(ids))
        assert killed.returncode == -signal.SIGKILL, f"{mode}: {killed.stderr}"

    done = run_trainer(prefix, group, checkpoint, "none", 0, len(ids))
    assert done.returncode == 0, done.stderr
    final = read_checkpoint(str(checkpoint))
    trained = final.state["trained"]
    assert sorted(trained) == sorted(ids), "every committed record trained, no aborted one"
    assert [rid for rid, n in trained.items() if n != 1] == [], "none trained twice"
    assert len(final.state["skipped"]) == len(set(final.state["skipped"])) == garbage
    # The checkpoint covers everything: the offsets are at the partitions' ends (past the markers too).
    covered = final.offset_map()
    assert all(covered.get((catalog.accepted, tp.partition), -1) >= tp.offset - 1 for tp in ends)


def test_sigkill_from_outside_at_arbitrary_points_trains_every_record_once(tmp_path: Path):
    """The trainer killed by its parent as soon as it reports its k-th batch: wherever it is then
    (training the next batch, writing the checkpoint, committing), the runs end exactly once."""
    prefix = unique_prefix("kill")
    catalog = TopicCatalog(prefix)
    create_topics(catalog)
    producer = AvroProducer()
    rows = [rollout(i, prefix) for i in range(150)]
    producer.send(catalog.accepted, "decision", ((r["group_id"], decision(r, prefix)) for r in rows))
    producer.flush()
    group = f"{prefix}.trainer"
    checkpoint = tmp_path / "trainer.ckpt"
    for k in (1, 3, 4):
        child = subprocess.Popen([sys.executable, str(PROGRAM), prefix, group, str(checkpoint), "none", "0", str(len(rows))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
        try:
            for _ in range(k):
                assert child.stdout.readline().startswith("batch"), "the trainer reports its batches"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            child.stdout.close()
    done = run_trainer(prefix, group, checkpoint, "none", 0, len(rows))
    assert done.returncode == 0, done.stderr
    trained = read_checkpoint(str(checkpoint)).state["trained"]
    assert sorted(trained) == sorted(r["id"] for r in rows)
    assert [rid for rid, n in trained.items() if n != 1] == []
