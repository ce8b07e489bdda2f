"""A trainer process for the crash tests: its "model" counts how often it trained each record
id (kept in the checkpoint state), and it SIGKILLs itself at a chosen point of a chosen batch:

  before   after training batch K, before the checkpoint
  between  after the checkpoint file is written, before the Kafka commit
  after    after the commit of batch K
  none     runs until it has trained --expect records and then saw an empty poll

    python crash_trainer.py PREFIX GROUP CHECKPOINT MODE K EXPECT
"""

import os
import signal
import sys

from flywheel_trainer import TrainerClient

prefix, group, checkpoint, mode, k, expect = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
client = TrainerClient.open(
    prefix=prefix,
    group_id=group,
    trainer="crash",
    checkpoint_path=checkpoint,
    brokers=os.environ.get("KAFKA_BROKERS", "127.0.0.1:19092"),
    registry_url=os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:18081/apis/ccompat/v7"),
)
state = client.restored.state if client.restored else {"trained": {}, "skipped": []}
n = 0


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


for batch in client.batches(max_records=7, max_wait_ms=300, empty_batches=True):
    # Batches count from the first with records: the first polls may come before the assignment.
    if batch.records or batch.skipped or n > 0:
        n += 1
    for d in batch.decisions:
        rid = d.value["rollout"]["id"]
        state["trained"][rid] = state["trained"].get(rid, 0) + 1
    state["skipped"] += [f"{t}:{p}:{o}" for t, p, o, _ in batch.skipped]
    if mode == "before" and n == k:
        die()

    def write(cp):
        cp.write(state)
        if mode == "between" and n == k:
            die()

    client.commit(batch, write)
    if mode == "after" and n == k:
        die()
    print(f"batch {n}: {len(batch.records)} records, {sum(state['trained'].values())} trained", flush=True)
    if mode == "none" and sum(state["trained"].values()) >= expect and not batch.records:
        break
client.close()
