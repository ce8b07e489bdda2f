import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { labelJoin, labelJoinStores, type JoinInput, type ScoredSample } from '../operators/signals/label-join.ts';
import { PartitionState } from '../streams/state-store.ts';

const scored = (id: string, raw: number, at = 1000): JoinInput => ({ kind: 'scored', scored: { id, raw, model_version: 'm1', vector: 'AAAA', at } satisfies ScoredSample });
const label = (id: string, value: number, at = 1000): JoinInput => ({ kind: 'label', id, value, at });

function setup() {
  const state = new PartitionState(0, [labelJoinStores.scored.name, labelJoinStores.labels.name]);
  const stores = { scored: state.store(labelJoinStores.scored.name), labels: state.store(labelJoinStores.labels.name) };
  const run = (inputs: JoinInput[]) => lastValueFrom(from(inputs).pipe(labelJoin({ ttlMs: 10_000 }, stores), toArray()));
  return { state, run };
}

describe('labelJoin', () => {
  it('joins whichever side arrives first, once', async () => {
    const { run } = setup();
    const out = await run([scored('a', 0.8), label('b', 1), label('a', 0), scored('b', 0.25), label('a', 1)]);
    expect(out.map((e) => [e.id, e.label, e.error])).toEqual([
      ['a', 0, -0.8],
      ['b', 1, 0.75],
    ]);
  });

  it('keeps waiting sides across batches: a new operator on the committed store continues', async () => {
    const { state, run } = setup();
    await run([scored('a', 0.5)]);
    state.commit();
    const out = await run([label('a', 1)]);
    expect(out.map((e) => [e.id, e.error])).toEqual([['a', 0.5]]);
  });

  it('forgets unmatched sides after the TTL, on ticks', async () => {
    const { run } = setup();
    await run([scored('old', 0.5, 1000), label('young', 1, 9000), { kind: 'tick', now: 12_000 }]);
    const out = await run([label('old', 1), scored('young', 0.5)]);
    expect(out.map((e) => e.id)).toEqual(['young']);
  });
});
