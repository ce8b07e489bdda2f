/**
 * The registry wire format in process, per record: Flywheel's compiled serde against
 * `@confluentinc/schemaregistry`'s AvroDeserializer/AvroSerializer (the anchor), on the same
 * ~345-byte synthetic rollouts (cli/synthetic.ts), same registry, same subjects and ids.
 *
 * - decode + encode: decode the rollout, encode a decision about it (what a pipeline worker does
 *   per record); Flywheel's side `prepare`s each 500-record batch once and then runs
 *   synchronously, the anchor awaits its promises (decodes of a batch together, as the old
 *   pipeline did, then each encode). Flywheel encodes the decision as sinks/kafka-outputs.ts
 *   does: the rollout's Avro body embedded as it came (`encodeWithHead`, the same bytes as
 *   encoding the whole decision); a second row encodes the whole decision, rollout included.
 * - decode alone: the same, without the encode.
 * - resolution: decode of records written with an evolved writer schema (fields removed and
 *   added), resolved to the reader, against decode of the reader's own records.
 *
 * Warm-up pass first, then interleaved passes; each figure is the median pass.
 *
 *   const rows = await benchSerde();           // BenchRow[]
 *   node --import tsx bench/serde.ts           // prints them
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import avsc from 'avsc';
import { syntheticRollouts } from '../cli/synthetic.ts';
import { formatTable } from '../lib/table.ts';
import { toDecision } from '../lib/decision.ts';
import { newSample } from '../lib/envelope.ts';
import { connectionsFromEnv } from '../streams/connections.ts';
import { rolloutSchema, type Decision, type Rollout } from '../contracts/records.ts';
import { confluentSerde, decisionSerde, registryClient, rolloutSerde } from '../streams/serde.ts';
import { median, ratio, type BenchRow } from './row.ts';

const BATCH = 500;
const context = { configHash: 'bench', pipelineRun: 'bench' };

export interface SerdeBenchOptions {
  /** Registry to register the bench's subjects in (default: SCHEMA_REGISTRY_URL or the local one). */
  registryUrl?: string;
  records?: number;
  passes?: number;
}

export async function benchSerde(options: SerdeBenchOptions = {}): Promise<BenchRow[]> {
  const records = options.records ?? 8_000;
  const passes = options.passes ?? 5;
  const client = registryClient(options.registryUrl ?? connectionsFromEnv().schemaRegistryUrl);
  const prefix = `bench-serde-${randomUUID().slice(0, 8)}`;
  const rollouts = syntheticRollouts({ groups: Math.ceil(records / 4), samplesPerGroup: 4, invalidRate: 0, garbage: 0, runId: prefix }).rollouts.slice(0, records);
  const ours = { rollouts: await rolloutSerde(client, `${prefix}.rollouts`), decisions: await decisionSerde(client, `${prefix}.decisions`) };
  const theirs = {
    rollouts: confluentSerde<Rollout>(client, ours.rollouts.topic, ours.rollouts.schemaId),
    decisions: confluentSerde<Decision>(client, ours.decisions.topic, ours.decisions.schemaId),
  };
  const payloads = rollouts.map((r) => ours.rollouts.encode(r));
  const batches = Array.from({ length: Math.ceil(payloads.length / BATCH) }, (_, i) => payloads.slice(i * BATCH, (i + 1) * BATCH));
  const meanBytes = payloads.reduce((n, p) => n + p.length, 0) / payloads.length;

  // Records of a producer on an evolved schema: model_name and run_id dropped, a field added.
  const evolvedSchema = { ...rolloutSchema, fields: [...rolloutSchema.fields.filter((f) => f.name !== 'model_name' && f.name !== 'run_id'), { name: 'temperature', type: 'double', default: 1 }] };
  const evolvedId = await client.register(`${ours.rollouts.topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(evolvedSchema) });
  const evolvedType = avsc.Type.forSchema(evolvedSchema as never);
  const evolvedBatches = batches.map((batch) =>
    batch.map((p) => {
      const { model_name: _m, run_id: _r, ...rest } = ours.rollouts.decode(p);
      const body = evolvedType.toBuffer({ ...rest, temperature: 0.7 });
      const out = Buffer.alloc(5 + body.length);
      out.writeInt32BE(evolvedId, 1);
      body.copy(out, 5);
      return out;
    }),
  );

  // Every pass consumes its results (a checksum), so nothing is optimised away.
  let sink = 0;
  const decision = (r: Rollout, i: number): Decision => toDecision(newSample(r, { topic: 'bench', partition: 0, offset: String(i) }, payloads[i % payloads.length]!, null), context);
  const embed = ours.decisions.headFingerprint === ours.rollouts.fingerprint;
  /** `encode`: none, the decision as the pipeline encodes it (rollout bytes embedded), or all of it. */
  const oursPass = async (encode: 'none' | 'pipeline' | 'whole', input = batches) => {
    let i = 0;
    for (const batch of input) {
      await ours.rollouts.prepare(batch);
      for (const p of batch) {
        const r = ours.rollouts.decode(p);
        if (encode === 'none') sink += r.token_count;
        else {
          const body = encode === 'pipeline' && embed ? ours.rollouts.readerBody(p) : undefined;
          sink += (body === undefined ? ours.decisions.encode(decision(r, i)) : ours.decisions.encodeWithHead(decision(r, i), body)).length;
        }
        i++;
      }
    }
  };
  const theirsPass = async (encode: boolean) => {
    let i = 0;
    for (const batch of batches) {
      const decoded = await Promise.all(batch.map((p) => theirs.rollouts.deserialize(p)));
      for (const r of decoded) {
        sink += encode ? (await theirs.decisions.serialize(decision(r, i))).length : r.token_count;
        i++;
      }
    }
  };
  const rate = async (pass: () => Promise<void>) => {
    const start = process.hrtime.bigint();
    await pass();
    return payloads.length / (Number(process.hrtime.bigint() - start) / 1e9);
  };
  const figures = {
    oursBoth: [] as number[],
    oursWhole: [] as number[],
    theirsBoth: [] as number[],
    oursDecode: [] as number[],
    theirsDecode: [] as number[],
    resolved: [] as number[],
    plain: [] as number[],
  };
  // Warm-up (JIT, the registry clients' caches, the evolved id learnt), not counted.
  await oursPass('pipeline');
  await oursPass('whole');
  await theirsPass(true);
  await oursPass('none', evolvedBatches);
  for (let p = 0; p < passes; p++) {
    figures.theirsBoth.push(await rate(() => theirsPass(true)));
    figures.oursBoth.push(await rate(() => oursPass('pipeline')));
    figures.oursWhole.push(await rate(() => oursPass('whole')));
    figures.theirsDecode.push(await rate(() => theirsPass(false)));
    figures.oursDecode.push(await rate(() => oursPass('none')));
    figures.resolved.push(await rate(() => oursPass('none', evolvedBatches)));
    figures.plain.push(await rate(() => oursPass('none')));
  }
  if (sink === 0) throw new Error('the serde bench decoded nothing');
  const anchor = '@confluentinc/schemaregistry AvroDeserializer + AvroSerializer';
  const note = `${payloads.length} synthetic rollouts, ${meanBytes.toFixed(0)} B each; median of ${passes} passes`;
  return [
    { figure: 'registry serde: decode rollout + encode decision', unit: 'records/s', flywheel: median(figures.oursBoth), anchor, anchorValue: median(figures.theirsBoth), note: `${note}; ${embed ? 'rollout bytes embedded, as the pipeline does' : 'whole decision encoded'}` },
    { figure: 'registry serde: decode rollout + encode decision, rollout encoded again', unit: 'records/s', flywheel: median(figures.oursWhole), anchor, anchorValue: median(figures.theirsBoth), note },
    { figure: 'registry serde: decode rollout', unit: 'records/s', flywheel: median(figures.oursDecode), anchor: '@confluentinc/schemaregistry AvroDeserializer', anchorValue: median(figures.theirsDecode), note },
    {
      figure: 'registry serde: decode with schema resolution (evolved writer)',
      unit: 'records/s',
      flywheel: median(figures.resolved),
      anchor: 'the same decode, writer = reader schema',
      anchorValue: median(figures.plain),
      note: 'writer lacks model_name and run_id (reader defaults) and adds a field',
    },
  ];
}


if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await benchSerde();
  process.stdout.write(
    `${formatTable(
      rows.map((r) => ({
        figure: r.figure,
        [r.unit]: Math.round(r.flywheel),
        anchor: r.anchor,
        'anchor value': r.anchorValue === null ? '' : Math.round(r.anchorValue),
        ratio: ratio(r)?.toFixed(2) ?? '',
      })),
    )}\n`,
  );
}
