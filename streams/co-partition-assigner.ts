import { AssignerProtocol, type PartitionAssigner } from 'kafkajs';
import { UnavailableError } from './errors.ts';

/**
 * Assigns partition p of every subscribed topic to the same member, as Kafka Streams does for
 * co-partitioned inputs: a task is "partition p", and its state sees all of p's inputs.
 * Partitions go round-robin over the members sorted by id, so the assignment is stable. Every
 * Flywheel consumer uses it, also for its second property: a join while some topic has no
 * metadata yet fails and is retried, where kafkajs's round-robin would assign nothing and leave
 * the member idle until the next rebalance.
 */
export const coPartitionAssigner: PartitionAssigner = ({ cluster }) => ({
  name: 'FlywheelCoPartitionAssigner',
  version: 0,
  async assign({ members, topics }) {
    const sorted = members.map((m) => m.memberId).sort();
    const assignment = new Map<string, Record<string, number[]>>(sorted.map((id) => [id, {}]));
    for (const topic of topics) {
      const partitions = cluster.findTopicPartitionMetadata(topic);
      // Metadata not there yet (a topic created a moment ago): assigning nothing would leave the
      // group idle until some later rebalance. Failing the join makes kafkajs retry it.
      if (partitions.length === 0) throw new UnavailableError('kafka', topic, 'no partition metadata yet');
      for (const { partitionId } of partitions) {
        const owner = assignment.get(sorted[partitionId % sorted.length]!)!;
        (owner[topic] ??= []).push(partitionId);
      }
    }
    return sorted.map((memberId) => ({
      memberId,
      memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: assignment.get(memberId)!, userData: Buffer.alloc(0) }),
    }));
  },
  protocol({ topics }) {
    return { name: 'FlywheelCoPartitionAssigner', metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
  },
});
