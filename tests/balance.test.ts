import { describe, expect, it } from 'vitest';
import type { Emit, Envelope, Sample, Tick } from '../lib/envelope.ts';
import {
  aucMannWhitney,
  exploreExploit,
  exploreExploitDefaults,
  exploreExploitStore,
  metricsOf,
  nextControl,
  passAtK,
  type ExploreExploitConfig,
  type ExploreExploitMetrics,
} from '../operators/balance/explore-exploit.ts';
import { qdArchive, qdArchiveStore, qdCellCount, type QdArchiveConfig } from '../operators/balance/qd-archive.ts';
import { loadConfig } from '../pipeline/config.ts';
import { quotaBalance, quotaBalanceDefaults, quotaBalanceStore, type QuotaBalanceConfig } from '../operators/balance/quota-balance.ts';
import { PartitionState } from '../streams/state-store.ts';
import { sample, samplesOf, through } from './helpers/envelopes.ts';

const T0 = 1_700_000_000_000; // a multiple of every window used here

function partition(store: string) {
  const state = new PartitionState(0, [store]);
  return { state, store: state.store(store) };
}

/** Runs one batch and commits it, as the processor does. */
async function batch(state: PartitionState, curator: Parameters<typeof through>[0], input: Envelope[]): Promise<Envelope[]> {
  const out = await through(curator, input);
  state.commit();
  return out;
}

const tick = (now: number): Tick => ({ kind: 'tick', now });
const emitsOf = (out: Envelope[]) => out.filter((e): e is Emit => e.kind === 'emit');
const ids = (out: Envelope[]) => samplesOf(out).map((s) => s.rollout.id);
const verdicts = (out: Envelope[]) => samplesOf(out).map((s) => [s.rollout.id, s.reasons[0] ?? 'accepted']);

describe('quotaBalance', () => {
  const config: QuotaBalanceConfig = {
    ...quotaBalanceDefaults,
    quota: 2,
    windowMs: 1000,
    maxOutOfOrdernessMs: 100,
    allowedLatenessMs: 0,
    maxDelayMs: 5000,
    retentionMs: 10_000,
  };
  const at = (id: string, ms: number, score: number, skill = 'add', extra: Partial<Sample> = {}) =>
    sample({ id, created_at: T0 + ms, tags: { skill } }, { scores: { rule: score }, ...extra });
  const setup = (overrides: Partial<QuotaBalanceConfig> = {}) => {
    const { state, store } = partition(quotaBalanceStore.name);
    return { state, store, op: quotaBalance({ ...config, ...overrides }, store) };
  };

  it('passes empty input and lone ticks, holding nothing', async () => {
    const { state, op } = setup();
    expect(await batch(state, op, [])).toEqual([]);
    expect(await batch(state, op, [tick(1), tick(2)])).toEqual([tick(1), tick(2)]);
  });

  it('holds a window until the watermark passes its end, then keeps the top quota (ties by id)', async () => {
    const { state, op } = setup();
    const held = await batch(state, op, [at('a', 100, 0.9), at('b', 200, 0.2), at('d', 300, 0.7), at('c', 400, 0.7)]);
    expect(held).toEqual([]);
    // 1050 − 100 of out-of-orderness: the watermark (950) is still inside the window.
    expect(await batch(state, op, [at('e', 1050, 0.5)])).toEqual([]);
    const out = samplesOf(await batch(state, op, [at('f', 1100, 0.5)]));
    expect(verdicts(out)).toEqual([
      ['a', 'accepted'],
      ['b', 'quota:add'],
      ['d', 'quota:add'],
      ['c', 'accepted'],
    ]);
    expect(out[0]!.annotations).toMatchObject({ 'quota.bucket': 'add', 'quota.window': `${T0}/${T0 + 1000}` });
  });

  it('takes out-of-order samples into their window while the watermark allows', async () => {
    const { state, op } = setup();
    await batch(state, op, [at('a', 100, 0.1), at('b', 1050, 0.5), at('late-but-in-time', 900, 0.9)]);
    const out = await batch(state, op, [at('c', 1100, 0.5)]);
    expect(verdicts(out)).toEqual([
      ['a', 'accepted'],
      ['late-but-in-time', 'accepted'],
    ]);
  });

  it('waits allowedLateness past the window end before releasing', async () => {
    const { state, op } = setup({ allowedLatenessMs: 500 });
    expect(await batch(state, op, [at('a', 100, 0.9), at('b', 1200, 0.5), at('c', 800, 0.1)])).toEqual([]);
    expect(ids(await batch(state, op, [at('d', 1600, 0.5)]))).toEqual(['a', 'c']);
  });

  it('decides late samples at once against what remains of the window quota', async () => {
    const { state, op } = setup();
    await batch(state, op, [at('a', 100, 0.9), at('b', 1100, 0.5)]);
    const out = samplesOf(await batch(state, op, [at('late1', 500, 0.1), at('late2', 600, 0.99)]));
    expect(verdicts(out)).toEqual([
      ['late1', 'accepted'],
      ['late2', 'quota:add'],
    ]);
    expect(out[0]!.annotations['quota.late']).toBe('1');
  });

  it('decides at once a sample for a window the watermark passed without any sample in it', async () => {
    const { state, op } = setup({ quota: 1 });
    await batch(state, op, [at('a', 2100, 0.5)]);
    expect(verdicts(await batch(state, op, [at('x', 500, 0.1), at('y', 600, 0.9)]))).toEqual([
      ['x', 'accepted'],
      ['y', 'quota:add'],
    ]);
  });

  it('rejects a sample whose window counts are past retention, marked expired', async () => {
    const { state, op } = setup({ retentionMs: 1000 });
    await batch(state, op, [at('a', 100, 0.9), at('b', 3200, 0.5)]);
    const [out] = samplesOf(await batch(state, op, [at('ancient', 200, 0.9)]));
    expect(out!.reasons).toEqual(['quota:add']);
    expect(out!.annotations['quota.late']).toBe('expired');
  });

  it('lets already rejected samples through at once without consuming quota', async () => {
    const { state, op } = setup({ quota: 1 });
    const dup = at('dup', 100, 1, 'add', { reasons: ['duplicate'] });
    const first = await batch(state, op, [dup, at('a', 200, 0.3)]);
    expect(samplesOf(first)).toMatchObject([{ rollout: { id: 'dup' }, reasons: ['duplicate'], annotations: { 'quota.bucket': 'add' } }]);
    expect(verdicts(await batch(state, op, [at('b', 1100, 0.5)]))).toEqual([['a', 'accepted']]);
  });

  it('keeps quotas per bucket, with overrides, by annotation, and an unknown bucket', async () => {
    const { state, op } = setup({ quota: 1, quotas: { big: 2 }, bucketBy: { annotation: 'cluster' } });
    const c = (id: string, ms: number, score: number, cluster?: string) =>
      sample({ id, created_at: T0 + ms }, { scores: { rule: score }, annotations: cluster === undefined ? {} : { cluster } });
    const big = [c('b1', 3, 0.1, 'big'), c('b2', 4, 0.2, 'big'), c('b3', 5, 0.3, 'big')];
    await batch(state, op, [c('s1', 1, 0.9, 'small'), c('s2', 2, 0.8, 'small'), ...big, c('u', 6, 0.1)]);
    const out = await batch(state, op, [c('next', 1100, 0.5, 'small')]);
    expect(verdicts(out)).toEqual([
      ['b1', 'quota:big'],
      ['b2', 'accepted'],
      ['b3', 'accepted'],
      ['s1', 'accepted'],
      ['s2', 'quota:small'],
      ['u', 'accepted'],
    ]);
    expect(samplesOf(out)[5]!.annotations['quota.bucket']).toBe('unknown');
  });

  it('releases by processing time: a tick after arrival + maxDelay, released samples before the tick', async () => {
    const { state, op } = setup({ maxOutOfOrdernessMs: 1_000_000 });
    // Arrived before any tick: its arrival is the first tick's time.
    await batch(state, op, [at('a', 100, 0.5)]);
    await batch(state, op, [tick(10_000)]);
    await batch(state, op, [at('b', 150, 0.6)]);
    expect(await batch(state, op, [tick(15_000)])).toEqual([tick(15_000)]);
    const out = await batch(state, op, [tick(15_001)]);
    expect(out.map((e) => (e.kind === 'sample' ? e.rollout.id : e.kind))).toEqual(['a', 'b', 'tick']);
    // The window was released early: later samples of it are late.
    expect(samplesOf(await batch(state, op, [at('c', 200, 0.1)]))[0]!.annotations['quota.late']).toBe('1');
  });

  it('releases the oldest windows early when more than maxHeld samples are held', async () => {
    const { state, op } = setup({ maxOutOfOrdernessMs: 1_000_000, maxHeld: 2 });
    expect(await batch(state, op, [at('a', 2100, 0.5), at('b', 100, 0.5)])).toEqual([]);
    expect(ids(await batch(state, op, [at('c', 1100, 0.5)]))).toEqual(['b']);
    expect(ids(await batch(state, op, [at('d', 1200, 0.5)]))).toEqual(['c', 'd']);
  });

  it('forgets the oldest window counts beyond maxWindows, expiring those windows', async () => {
    const { state, op } = setup({ maxWindows: 1 });
    await batch(state, op, [at('a', 100, 0.5), at('b', 1100, 0.5), at('c', 2100, 0.5)]);
    const [late] = samplesOf(await batch(state, op, [at('late', 200, 0.5)]));
    expect(late!.annotations['quota.late']).toBe('expired');
    const [recent] = samplesOf(await batch(state, op, [at('recent', 1200, 0.5)]));
    expect(recent!.annotations['quota.late']).toBe('1');
  });

  it('never accepts more than quota in any sliding window', async () => {
    const { state, op } = setup({ windowMs: 2000, slideMs: 1000 });
    const out = await batch(state, op, [
      ...[at('a', 100, 0.9), at('b', 200, 0.8)],
      ...[at('c', 1100, 0.9), at('d', 1200, 0.9)],
      ...[at('e', 2100, 0.1), at('f', 2200, 0.2)],
      at('g', 3100, 0.5),
    ]);
    expect(verdicts(out)).toEqual([
      ['a', 'accepted'],
      ['b', 'accepted'],
      ['c', 'quota:add'],
      ['d', 'quota:add'],
      ['e', 'accepted'],
      ['f', 'accepted'],
    ]);
    expect(samplesOf(out)[2]!.annotations['quota.window']).toBe(`${T0 + 1000}/${T0 + 2000}`);
  });

  it('continues from the store after a restart', async () => {
    const { state, store } = partition(quotaBalanceStore.name);
    await batch(state, quotaBalance(config, store), [at('a', 100, 0.2), at('b', 200, 0.9), at('c', 300, 0.5), tick(10)]);
    const restarted = quotaBalance(config, store);
    expect(verdicts(await batch(state, restarted, [at('d', 1100, 0.5)]))).toEqual([
      ['a', 'quota:add'],
      ['b', 'accepted'],
      ['c', 'accepted'],
    ]);
    expect(samplesOf(await batch(state, restarted, [at('late', 400, 1)]))[0]!.reasons).toEqual(['quota:add']);
  });

  it('forgets what an aborted batch held', async () => {
    const { state, store } = partition(quotaBalanceStore.name);
    await through(quotaBalance(config, store), [at('a', 100, 0.5)]);
    state.abort();
    expect(await batch(state, quotaBalance(config, store), [at('b', 1100, 0.5)])).toEqual([]);
  });

  it('passes dead letters and emits in order and dead-letters a malformed sample', async () => {
    const { state, op } = setup();
    const emit: Emit = { kind: 'emit', output: 'control', key: 'k', value: {} };
    const dead = { kind: 'dead' as const, source: { topic: 't', partition: 0, offset: '1' }, payload: null, key: null, stage: 'decode', reason: 'x' };
    const broken = sample({ id: 'broken', tags: undefined as unknown as Record<string, string> });
    const out = await batch(state, op, [emit, broken, dead]);
    expect(out.map((e) => e.kind)).toEqual(['emit', 'dead', 'dead']);
    expect(out[1]).toMatchObject({ stage: 'quota-balance' });
  });

  it('refuses a window that is not a multiple of the slide', () => {
    const { store } = partition(quotaBalanceStore.name);
    expect(() => quotaBalance({ ...config, windowMs: 1000, slideMs: 300 }, store)).toThrow(/multiple of slideMs/);
  });
});

describe('qdArchive', () => {
  const config: QdArchiveConfig = {
    descriptors: [
      { name: 'length', value: { field: 'token_count' }, edges: [100] },
      { name: 'skill', label: { tag: 'skill' }, categories: ['add', 'sub'] },
    ],
    score: 'rule',
    mode: 'annotate',
    reportEvery: 3,
    maxCells: 100,
  };
  const cellSample = (id: string, tokens: number, skill: string | undefined, score: number | undefined, extra: Partial<Sample> = {}) =>
    sample({ id, token_count: tokens, tags: skill === undefined ? {} : { skill } }, { scores: score === undefined ? {} : { rule: score }, ...extra });
  const setup = (overrides: Partial<QdArchiveConfig> = {}) => {
    const { state, store } = partition(qdArchiveStore.name);
    return { state, store, op: qdArchive({ ...config, ...overrides }, store) };
  };
  const elites = (out: Envelope[]) => samplesOf(out).map((s) => [s.rollout.id, s.annotations['qd.cell'], s.annotations['qd.elite']]);

  it('counts the grid cells from the descriptors: the denominator of coverage, e.g. the demo\'s', () => {
    expect(qdCellCount(config.descriptors)).toBe(4);
    // cli/demo.ts divides by this for the demo's grid: 3 skills × 4 length bins.
    const demo = loadConfig(new URL('../deploy/flywheel-demo.json', import.meta.url).pathname).operators.find((op) => op.type === 'qd-archive');
    expect(demo?.type === 'qd-archive' && qdCellCount(demo.descriptors)).toBe(12);
    expect(qdCellCount([...config.descriptors, { name: 'source', label: { tag: 'source' }, categories: ['a', 'b', 'c'] }])).toBe(12);
  });

  it('keeps the best per cell and reports coverage every reportEvery samples', async () => {
    const { state, op } = setup();
    const out = await batch(state, op, [
      cellSample('a', 50, 'add', 0.5),
      cellSample('b', 99, 'add', 0.4),
      cellSample('c', 100, 'add', 0.6),
      cellSample('d', 10, 'add', 0.7),
    ]);
    expect(elites(out)).toEqual([
      ['a', 'length=0|skill=add', '1'],
      ['b', 'length=0|skill=add', '0'],
      ['c', 'length=1|skill=add', '1'],
      ['d', 'length=0|skill=add', '1'],
    ]);
    expect(out.map((e) => e.kind)).toEqual(['sample', 'sample', 'sample', 'emit', 'sample']);
    expect(emitsOf(out)[0]).toEqual({
      kind: 'emit',
      output: 'control',
      key: 'qd-coverage',
      value: { kind: 'qd_coverage', filled: 2, total: 4, coverage: 0.5, by_cell_best: { 'length=0|skill=add': 0.5, 'length=1|skill=add': 0.6 } },
    });
  });

  it('keeps the incumbent on a tie and still calls a re-sent elite the elite', async () => {
    const { state, op } = setup();
    const out = await batch(state, op, [cellSample('a', 1, 'add', 0.5), cellSample('b', 1, 'add', 0.5), cellSample('a', 1, 'add', 0.5)]);
    expect(elites(out).map(([id, , elite]) => `${id}:${elite}`)).toEqual(['a:1', 'b:0', 'a:1']);
  });

  it('places no sample without descriptor values; elites-only rejects the rest with stable reasons', async () => {
    const { state, op } = setup({ mode: 'elites-only' });
    const out = samplesOf(
      await batch(state, op, [
        cellSample('no-skill', 1, undefined, 0.9),
        cellSample('other-skill', 1, 'mul', 0.9),
        cellSample('first', 1, 'sub', 0.5),
        cellSample('worse', 1, 'sub', 0.4),
        cellSample('unscored', 1, 'sub', undefined),
        cellSample('rejected', 1, 'sub', 0.99, { reasons: ['duplicate'] }),
      ]),
    );
    expect(out.map((s) => [s.rollout.id, s.reasons])).toEqual([
      ['no-skill', ['qd:no_cell']],
      ['other-skill', ['qd:no_cell']],
      ['first', []],
      ['worse', ['qd:not_elite']],
      ['unscored', ['qd:not_elite']],
      ['rejected', ['duplicate']],
    ]);
    expect(out[0]!.annotations).toEqual({});
    expect(out[5]!.annotations).toEqual({ 'qd.cell': 'length=0|skill=sub', 'qd.elite': '0' });
  });

  it('reports on a tick only when samples came since the last report', async () => {
    const { state, op } = setup({ reportEvery: 100 });
    expect(await batch(state, op, [])).toEqual([]);
    expect(await batch(state, op, [tick(1)])).toEqual([tick(1)]);
    const out = await batch(state, op, [cellSample('a', 500, 'sub', 1), tick(2), tick(3)]);
    expect(out.map((e) => e.kind)).toEqual(['sample', 'emit', 'tick', 'tick']);
    expect(emitsOf(out)[0]!.value).toMatchObject({ filled: 1, total: 4, coverage: 0.25, by_cell_best: { 'length=1|skill=sub': 1 } });
  });

  it('continues from the store after a restart', async () => {
    const { state, store } = partition(qdArchiveStore.name);
    await batch(state, qdArchive(config, store), [cellSample('a', 1, 'add', 0.8), cellSample('b', 1, 'sub', 0.1)]);
    const out = await batch(state, qdArchive(config, store), [cellSample('c', 1, 'add', 0.7)]);
    expect(elites(out)).toEqual([['c', 'length=0|skill=add', '0']]);
    expect(emitsOf(out)[0]!.value).toMatchObject({ filled: 2, coverage: 0.5 });
  });

  it('refuses a grid larger than maxCells or empty', () => {
    const { store } = partition(qdArchiveStore.name);
    expect(() => qdArchive({ ...config, maxCells: 3 }, store)).toThrow(/4 cells/);
    expect(() => qdArchive({ ...config, descriptors: [] }, store)).toThrow(/at least one descriptor/);
  });
});

describe('exploreExploit', () => {
  const config: ExploreExploitConfig = {
    ...exploreExploitDefaults,
    score: 'rule',
    k: 2,
    reportEvery: 4,
    minGroups: 2,
    threshold: { initial: 0.5, min: 0.2, max: 0.8, gain: 0.5, maxStep: 0.1, deadBand: 0.05 },
    targets: { passAtK: 0.7, distinctCorrect: null, acceptRate: 0.5, precision: 0.9, auc: 0.75 },
    temperature: { initial: 1, min: 0.5, max: 1.2, step: 0.1 },
    samplesPerPrompt: { initial: 8, min: 4, max: 12, step: 4 },
  };
  const answer = (id: string, group: string, correct: number, score: number | undefined, response = `Answer: ${correct ? 4 : 5}`, version = 'v1') =>
    sample(
      { id, group_id: group, prompt_id: group, rewards: { correct }, response, model_version: version },
      { scores: score === undefined ? {} : { rule: score } },
    );
  const setup = (overrides: Partial<ExploreExploitConfig> = {}) => {
    const { state, store } = partition(exploreExploitStore.name);
    return { state, store, op: exploreExploit({ ...config, ...overrides }, store) };
  };

  it('computes AUC by Mann–Whitney, ties counting half', () => {
    // Right 0.9, 0.7, 0.5 against wrong 0.6, 0.5, 0.2: 3 + 3 + (0 + ½ + 1) = 7.5 of 9 pairs.
    const pairs: Array<[number, boolean]> = [
      [0.9, true],
      [0.6, false],
      [0.7, true],
      [0.5, false],
      [0.5, true],
      [0.2, false],
    ];
    expect(aucMannWhitney(pairs)).toBeCloseTo(7.5 / 9, 12);
    expect(aucMannWhitney([[0.1, true]])).toBeNull();
    expect(aucMannWhitney([])).toBeNull();
  });

  it('estimates pass@k without bias', () => {
    expect(passAtK(5, 1, 2)).toBeCloseTo(1 - 6 / 10, 12); // 1 − C(4,2)/C(5,2)
    expect(passAtK(4, 0, 2)).toBe(0);
    expect(passAtK(4, 3, 2)).toBe(1);
  });

  it('counts distinct correct answers per full group, by the final answer', async () => {
    const { state, store, op } = setup({ reportEvery: 100 });
    await batch(state, op, [
      answer('a1', 'g1', 1, 0.9, 'Answer: 3\nno wait, Answer: 4'),
      answer('a2', 'g1', 1, 0.9, 'Answer: 4'),
      answer('a3', 'g1', 1, 0.9, 'It is  FOUR'),
      answer('a4', 'g1', 0, 0.1),
      answer('b1', 'g2', 0, 0.2),
      answer('c1', 'g3', 1, 0.9), // alone: fewer than k samples, not counted yet
    ]);
    const m = metricsOf(JSON.parse(store.get('v/v1')!), 2);
    expect(m.groups).toBe(1);
    expect(m.exploration).toBe(2); // "4" and "it is four"
    expect(m.passAtK).toBe(1);
    expect(m.auc).toBe(1);
  });

  it('filters below the threshold, annotates it, and passes samples without the score', async () => {
    const { state, op } = setup({ reportEvery: 100 });
    const out = samplesOf(await batch(state, op, [answer('lo', 'g', 0, 0.49), answer('hi', 'g', 1, 0.5), answer('none', 'g', 1, undefined)]));
    expect(out.map((s) => [s.rollout.id, s.reasons])).toEqual([
      ['lo', ['explore_exploit:below_threshold']],
      ['hi', []],
      ['none', []],
    ]);
    expect(out[0]!.annotations['explore_exploit.threshold']).toBe('0.5');
  });

  describe('nextControl', () => {
    const control = { threshold: 0.5, temperature: 1, samplesPerPrompt: 8 };
    const fine: ExploreExploitMetrics = { groups: 10, exploration: 1, passAtK: 0.7, auc: 0.9, acceptRate: 0.5, precision: 0.95 };

    it('holds inside the dead-band', () => {
      expect(nextControl(control, { ...fine, passAtK: 0.66, acceptRate: 0.54 }, config)).toEqual(control);
    });

    it('lowers the threshold and asks for more exploration when pass@k falls short', () => {
      expect(nextControl(control, { ...fine, passAtK: 0.6 }, config)).toEqual({ threshold: 0.45, temperature: 1.1, samplesPerPrompt: 12 });
      // Proportional but capped at maxStep, and never below min.
      expect(nextControl(control, { ...fine, passAtK: 0 }, config).threshold).toBeCloseTo(0.4, 12);
      expect(nextControl({ threshold: 0.22, temperature: 1.2, samplesPerPrompt: 12 }, { ...fine, passAtK: 0 }, config)).toEqual({
        threshold: 0.2,
        temperature: 1.2,
        samplesPerPrompt: 12,
      });
    });

    it('judges exploration by distinct correct answers too, when targeted', () => {
      const targeted = { ...config, targets: { ...config.targets, distinctCorrect: 2 } };
      expect(nextControl(control, { ...fine, exploration: 1 }, targeted).threshold).toBeLessThan(0.5);
    });

    it('raises the threshold when the score is trusted and too much or too noisy data passes', () => {
      expect(nextControl(control, { ...fine, acceptRate: 0.6 }, config).threshold).toBeCloseTo(0.55, 12);
      expect(nextControl(control, { ...fine, precision: 0.7 }, config).threshold).toBeCloseTo(0.6, 12);
      expect(nextControl({ ...control, threshold: 0.79 }, { ...fine, acceptRate: 1 }, config).threshold).toBe(0.8);
      // The same excess with an untrustworthy score: no raise.
      expect(nextControl(control, { ...fine, acceptRate: 1, auc: 0.6 }, config)).toEqual(control);
    });

    it('lowers the temperature when exploration is high but exploitation poor', () => {
      expect(nextControl(control, { ...fine, passAtK: 0.95, auc: 0.6 }, config)).toEqual({ ...control, temperature: 0.9 });
      expect(nextControl({ ...control, temperature: 0.5 }, { ...fine, passAtK: 0.95, auc: 0.6 }, config).temperature).toBe(0.5);
    });
  });

  it('steps down and recommends exploring when no group finds a correct answer, and reports', async () => {
    const { state, op } = setup();
    const out = await batch(state, op, [
      ...[answer('a', 'g1', 0, 0.9), answer('b', 'g1', 0, 0.1)],
      ...[answer('c', 'g2', 0, 0.9), answer('d', 'g2', 0, 0.1)],
    ]);
    expect(out.map((e) => e.kind)).toEqual(['sample', 'sample', 'sample', 'sample', 'emit']);
    expect(emitsOf(out)[0]).toEqual({
      kind: 'emit',
      output: 'control',
      key: 'explore-exploit',
      value: {
        kind: 'explore_exploit',
        model_version: 'v1',
        exploration: 0,
        pass_at_k: 0,
        exploitation_auc: null,
        threshold: 0.4,
        recommend: { temperature: 1.1, samples_per_prompt: 12 },
        groups: 2,
        accept_rate: 0.5,
        precision: 0,
      },
    });
  });

  it('raises the threshold when the score separates well and too much passes, and continues after a restart', async () => {
    const { state, store } = partition(exploreExploitStore.name);
    const stream = (n: number) => [answer(`r${n}`, `g${n}`, 1, 0.95), answer(`w${n}`, `g${n}`, 0, 0.6)];
    const first = await batch(state, exploreExploit(config, store), [...stream(1), ...stream(2)]);
    expect(emitsOf(first)[0]!.value).toMatchObject({ exploitation_auc: 1, pass_at_k: 1, threshold: 0.6 });
    const again = await batch(state, exploreExploit(config, store), [...stream(3), ...stream(4)]);
    // At 0.6 the wrong ones still pass (accept rate 1): one more step up, from the stored 0.6.
    expect(emitsOf(again)[0]!.value).toMatchObject({ threshold: 0.7 });
    expect(samplesOf(again)[1]!.annotations['explore_exploit.threshold']).toBe('0.6');
  });

  it('reports on ticks only for versions with new samples; a new version inherits the control; old versions are forgotten', async () => {
    const { state, store, op } = setup({ reportEvery: 100, maxVersions: 2, threshold: { ...config.threshold, initial: 0.3 } });
    expect(await batch(state, op, [tick(1)])).toEqual([tick(1)]);
    const out = await batch(state, op, [answer('a', 'g', 1, 0.9, undefined, 'v1'), answer('b', 'g', 1, 0.9, undefined, 'v2'), tick(2), tick(3)]);
    expect(emitsOf(out).map((e) => e.value.model_version)).toEqual(['v1', 'v2']);
    expect(out.slice(-2)).toEqual([tick(2), tick(3)]);
    await batch(state, op, [answer('c', 'g', 1, 0.9, undefined, 'v3')]);
    expect(store.get('v/v1')).toBeUndefined();
    expect(JSON.parse(store.get('v/v3')!).control.threshold).toBe(0.3);
  });
});
