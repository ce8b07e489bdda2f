/**
 * Changelog restore (issue #7: restore time must scale): `restoreChangelog` of one partition of
 * a compacted changelog with N live entries, against a bare kafkajs consumer reading the same
 * partition's records from the beginning, both timed from the call (group join included on both
 * sides, as a restore pays it). The other partitions of the topic hold as many records, which the
 * restore must not read.
 *
 *   const rows = await benchRestore({ entries: 100_000 });
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import type { Message } from 'kafkajs';
import { restoreChangelog } from '../streams/changelog-restore.ts';
import { connectionsFromEnv } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { changelogTopicConfig, ensureTopics } from '../streams/topics.ts';
import { bareConsumerPass, sendAll } from './kafka.ts';
import { median, type BenchRow } from './row.ts';

export async function benchRestore(options: { entries?: number; passes?: number } = {}): Promise<BenchRow[]> {
  const entries = options.entries ?? 100_000;
  const passes = options.passes ?? 3;
  const kafka = createKafka(connectionsFromEnv(), 'flywheel-bench-restore');
  const topic = `bench-restore-${randomUUID().slice(0, 8)}-changelog`;
  // The one partition restored, in a topic of one partition: the anchor reads exactly its records.
  const single = `${topic}-single`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [changelogTopicConfig(topic, 3), changelogTopicConfig(single, 1)]);
    // Values shaped like exact-dedupe's entries (~66 bytes of JSON).
    const value = (i: number) => JSON.stringify({ id: `rollout-${i}-${'x'.repeat(20)}`, at: 1_700_000_000_000 + i, seq: i });
    const records = (partition: number): Message[] => Array.from({ length: entries }, (_, i) => ({ key: `k${partition}:${i}`, value: value(i), partition }));
    for (const p of [0, 1, 2]) await sendAll(kafka, topic, records(p));
    await sendAll(kafka, single, records(0));

    const restore: number[] = [];
    const bare: number[] = [];
    await restoreChangelog(kafka, topic, [1], { admin }); // warm-up
    for (let i = 0; i < passes; i++) {
      bare.push((await bareConsumerPass(kafka, single, entries)).withStart);
      const start = performance.now();
      const restored = await restoreChangelog(kafka, topic, [1], { admin });
      const seconds = (performance.now() - start) / 1000;
      if (restored.get(1)?.size !== entries) throw new Error(`restore folded ${restored.get(1)?.size} entries, expected ${entries}`);
      restore.push(entries / seconds);
    }
    return [
      {
        figure: `changelog restore of one partition (${entries.toLocaleString('en')} entries; 2 more partitions alike)`,
        unit: 'entries/s',
        flywheel: median(restore),
        anchor: 'bare kafkajs consumer, same records, group join included',
        anchorValue: median(bare),
        note: `median of ${passes}; restore ${Math.round(entries / median(restore) * 1000)} ms`,
      },
    ];
  } finally {
    await admin.deleteTopics({ topics: [topic, single] }).catch(() => undefined);
    await admin.disconnect();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.table(await benchRestore({ entries: Number(process.env.FLYWHEEL_BENCH_RECORDS ?? 100_000) }));
}
