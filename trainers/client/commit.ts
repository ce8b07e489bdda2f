import type { Consumer } from 'kafkajs';
import type { Decision } from '../../contracts/records.ts';
import type { Logger } from '../../lib/log.ts';
import type { ReplaySnapshot } from '../admission.ts';
import { writeCheckpointFile } from '../checkpoint.ts';
import type { Batcher } from './batching.ts';
import type { Counters } from './metrics.ts';
import type { Positions } from './positions.ts';
import type { CheckpointWriter, CommitResult, Consumed, TrainingBatch } from './types.ts';

/** What the client stores in a checkpoint's `admission` field beside the trainer's state. */
export interface ClientCheckpointAdmission {
  replay: ReplaySnapshot<Consumed<Decision>> | null;
}

export interface CommitterDeps {
  checkpointPath: string;
  groupId: string;
  consumer: Pick<Consumer, 'commitOffsets'>;
  positions: Positions;
  batcher: Batcher;
  counters: Counters;
  /** The client's failure, if it failed for good: then nothing more is committed. */
  failure: () => Error | undefined;
  log: Logger;
}

/**
 * The commit protocol: checkpoint first, then the Kafka commit.
 * 1. `checkpoint(cp)` must call `cp.write(state, arrays)` with the model state after training on
 *    everything up to the batch (and nothing after it); the file is replaced atomically, with
 *    the batch's offsets and the replay buffer as of the batch;
 * 2. if it throws, or returns without writing, nothing is committed and the error propagates —
 *    the previous checkpoint stands;
 * 3. then the offsets of the partitions this member still holds are committed to the group. A
 *    failure there is reported in the result and the counters, not thrown: the checkpoint is
 *    authoritative, the group's offsets are for lag monitoring and partitions it does not know;
 * 4. commits run one at a time, in call order, and a batch older than the last committed one is
 *    refused (its offsets under newer state would re-train what lies between).
 *
 * @example
 *   const result = await committer.commit(batch, (cp) => cp.write(model.state(), model.arrays()));
 *   result.kafka; // 'committed' | 'failed' | 'nothing-assigned'
 */
export class Committer {
  private chain: Promise<unknown> = Promise.resolve();
  private lastCommittedSeq = 0;

  constructor(private readonly deps: CommitterDeps) {}

  /** Settles once every commit asked for so far has finished. */
  get settled(): Promise<unknown> {
    return this.chain;
  }

  commit(batch: TrainingBatch, checkpoint: (cp: CheckpointWriter) => Promise<void>): Promise<CommitResult> {
    const run = () => this.run(batch, checkpoint);
    const result = this.chain.then(run, run);
    this.chain = result.catch(() => undefined);
    return result;
  }

  private async run(batch: TrainingBatch, checkpoint: (cp: CheckpointWriter) => Promise<void>): Promise<CommitResult> {
    const { deps } = this;
    const failure = deps.failure();
    if (failure) throw failure;
    if (!deps.batcher.formed(batch)) throw new Error('commit: this batch did not come from this client');
    if (batch.seq < this.lastCommittedSeq) throw new Error(`commit: batch ${batch.seq} is older than the committed batch ${this.lastCommittedSeq}`);
    const replay = deps.batcher.replaySnapshot(batch);
    let written = false;
    const writer: CheckpointWriter = {
      offsets: batch.offsets,
      batch: batch.seq,
      write: async (state, arrays = {}) => {
        const admission: ClientCheckpointAdmission = { replay };
        await writeCheckpointFile(deps.checkpointPath, { group: deps.groupId, savedAt: Date.now(), offsets: [...batch.offsets], state, arrays, admission });
        written = true;
      },
    };
    await checkpoint(writer);
    if (!written) throw new Error(`checkpoint callback for batch ${batch.seq} returned without writing the checkpoint: nothing committed`);
    deps.counters.checkpoints++;
    this.lastCommittedSeq = batch.seq;
    const owned = batch.offsets.filter((o) => deps.positions.owns(o.topic, o.partition));
    if (owned.length === 0) return { offsets: batch.offsets, kafka: 'nothing-assigned' };
    try {
      await deps.consumer.commitOffsets(owned.map((o) => ({ topic: o.topic, partition: o.partition, offset: o.offset })));
      deps.counters.kafkaCommits++;
      return { offsets: batch.offsets, kafka: 'committed' };
    } catch (err) {
      const message = (err as Error).message;
      deps.counters.kafkaCommitFailures++;
      deps.counters.lastKafkaCommitError = message;
      deps.log.warn('checkpoint written, Kafka offset commit failed (the checkpoint stands)', { batch: batch.seq, error: message });
      return { offsets: batch.offsets, kafka: 'failed' };
    }
  }
}
