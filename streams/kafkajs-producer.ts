/**
 * Replaces kafkajs 2.2.4's `groupMessagesPerPartition` (the producer's first step of every send)
 * with a linear one. Its own version rebuilds the partition's array for every message
 * (`[...current, message]` inside a reduce), so a send of n messages to one partition copies
 * n²/2 array slots: a processor transaction of 3,000 decisions and 6,000 changelog records made
 * it ~8 % of a pipeline worker's CPU and most of its ~100 KB of JS heap per record (then GC).
 * The result is the same object: `{ [partition]: messages in their order }`.
 *
 * kafkajs reads the function once, when its producer module loads, so this must run before the
 * first import of kafkajs evaluates: streams/kafka.ts imports it first, and every module that
 * imports kafkajs for values imports this before it. `linearGrouping` says whether it took.
 *
 *   import './kafkajs-grouping.ts';   // before `import … from 'kafkajs'`
 */
import { createRequire } from 'node:module';

interface GroupArgs {
  topic: string;
  partitionMetadata: unknown[];
  messages: unknown[];
  partitioner: (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => number;
}

function groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner }: GroupArgs): Record<number, unknown[]> {
  if (partitionMetadata.length === 0) return {};
  const result: Record<number, unknown[]> = {};
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

const require = createRequire(import.meta.url);
const modulePath = require.resolve('kafkajs/src/producer/groupMessagesPerPartition.js');
const senderPath = require.resolve('kafkajs/src/producer/sendMessages.js');

/** False when kafkajs's producer had loaded before this module (the quadratic grouping stays). */
export const linearGrouping: boolean = require.cache[senderPath] === undefined;
if (linearGrouping) {
  require(modulePath);
  require.cache[modulePath]!.exports = groupMessagesPerPartition;
}
