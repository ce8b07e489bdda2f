import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseJsonLines } from './json-lines.ts';
import type { Label } from '../contracts/records.ts';
import type { Connections } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import { labelSerde, registryClient } from '../streams/serde.ts';

/**
 * `flywheel label`: verified outcomes as JSON lines → Avro `Label` records on `<prefix>.labels`,
 * keyed by rollout id (so a rollout's labels share a partition, as the label join and the
 * ClickHouse sink expect). One line:
 *
 *   {"rollout_id": "r-17", "value": 1, "verifier": "unit-tests", "at": "2026-12-02T03:00:00Z"}
 *
 * `value` is the outcome (1/0, or graded); `verifier` defaults to ''; `at` (epoch ms or an ISO
 * time) to now. A bad line is reported with its number and the field at fault and not sent; the
 * good lines are sent, and the command exits non-zero when any line was bad.
 */

const labelLine = z.strictObject({
  rollout_id: z.string().min(1),
  value: z.number().refine(Number.isFinite, 'must be a finite number'),
  verifier: z.string().default(''),
  at: z.union([z.number().int().nonnegative(), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))]).optional(),
});

export interface ParsedLabels {
  labels: Label[];
  /** `line <n>: <field>: <reason>`, one per bad line. */
  errors: string[];
}

/** Parses JSON lines into labels; blank lines are skipped, bad ones reported (never sent half-made). */
export function parseLabelLines(text: string, now = Date.now()): ParsedLabels {
  const { values, errors } = parseJsonLines(text, labelLine);
  return { labels: values.map((l) => ({ ...l, at: l.at ?? now })), errors };
}

/**
 * Sends the labels in `text` (JSON lines) to `topic`, which must exist (`flywheel run` creates a
 * pipeline's topics). Returns how many were sent and the bad lines (already written to stderr,
 * prefixed with `source`).
 */
export async function labelCommand(connections: Connections, topic: string, text: string, source = 'stdin'): Promise<{ sent: number; errors: string[] }> {
  const { labels, errors } = parseLabelLines(text);
  for (const error of errors) process.stderr.write(`${source}: ${error}\n`);
  if (labels.length === 0) return { sent: 0, errors };
  const kafka = createKafka(connections, 'flywheel-label');
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) throw new Error(`topic ${topic} does not exist: \`flywheel run\` creates a pipeline's topics (<prefix>.labels)`);
  } finally {
    await admin.disconnect();
  }
  const serde = await labelSerde(registryClient(connections), topic);
  // Idempotent: a retried send after a lost acknowledgement writes no second copy.
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < labels.length; i += 500) {
      const chunk = labels.slice(i, i + 500);
      await producer.send({ topic, acks: -1, messages: chunk.map((l) => ({ key: l.rollout_id, value: serde.encode(l) })) });
    }
  } finally {
    await producer.disconnect();
  }
  return { sent: labels.length, errors };
}

/** The text `flywheel label` reads: `--file <path>`, or stdin when no file (or `-`) is given. */
export function readLabelInput(file: string | undefined): { text: string; source: string } {
  if (file === undefined || file === '-') return { text: readFileSync(0, 'utf8'), source: 'stdin' };
  return { text: readFileSync(file, 'utf8'), source: file };
}
