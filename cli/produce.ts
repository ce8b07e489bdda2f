import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseJsonLines } from './json-lines.ts';
import type { Connections } from '../streams/connections.ts';
import { createKafka } from '../streams/kafka.ts';
import type { Rollout } from '../contracts/records.ts';
import { produceRollouts } from '../streams/rollout-producer.ts';
import { registryClient, rolloutSerde } from '../streams/serde.ts';

/** A rollout as a JSON line: the Avro fields, with the optional ones defaulted. */
const rolloutLine = z.strictObject({
  id: z.string(),
  run_id: z.string().default(''),
  prompt_id: z.string(),
  prompt: z.string(),
  group_id: z.string().optional(),
  response: z.string().nullable().default(null),
  steps: z.array(z.strictObject({ role: z.string(), content: z.string() })).default([]),
  model_name: z.string().default(''),
  model_version: z.string(),
  rewards: z.record(z.string(), z.number()).default({}),
  logprobs: z.array(z.number()).nullable().default(null),
  token_count: z.number().int().default(0),
  created_at: z.union([z.number(), z.iso.datetime().transform((s) => Date.parse(s))]).optional(),
  tags: z.record(z.string(), z.string()).default({}),
});

export interface ParsedLines {
  rollouts: Rollout[];
  errors: string[];
}

/** Parses JSON lines; a bad line is reported by number and reason, never sent half-made. */
export function parseRolloutLines(text: string, now = Date.now()): ParsedLines {
  const { values, errors } = parseJsonLines(text, rolloutLine);
  return { rollouts: values.map((r) => ({ ...r, group_id: r.group_id ?? r.prompt_id, created_at: r.created_at ?? now })), errors };
}

export async function produceFile(connections: Connections, topic: string, file: string): Promise<{ sent: number; errors: string[] }> {
  const { rollouts, errors } = parseRolloutLines(readFileSync(file, 'utf8'));
  for (const error of errors) process.stderr.write(`${file}: ${error}\n`);
  const kafka = createKafka(connections, 'flywheel-produce');
  const admin = kafka.admin();
  await admin.connect();
  const exists = (await admin.listTopics()).includes(topic);
  await admin.disconnect();
  if (!exists) throw new Error(`topic ${topic} does not exist: \`flywheel run\` creates a pipeline's topics (<prefix>.rollouts)`);
  const serde = await rolloutSerde(registryClient(connections), topic);
  const sent = await produceRollouts(kafka, serde, rollouts, {
    onProgress: (n) => process.stderr.write(`\rsent ${n}/${rollouts.length}`),
  });
  process.stderr.write('\n');
  return { sent, errors };
}
