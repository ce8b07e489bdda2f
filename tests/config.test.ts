import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, configHash, loadConfig, parseConfig } from '../pipeline/config.ts';
import { declaredStores } from '../pipeline/curators.ts';
import { describePipeline } from '../pipeline/describe.ts';
import { createdAtDefaults } from '../operators/filter/validate.ts';

const minimal = { name: 'p', operators: [{ type: 'validate' }] };

describe('pipeline config', () => {
  it('fills defaults', () => {
    const config = parseConfig(minimal);
    expect(config.run).toBe('live');
    expect(config.topics).toEqual({ prefix: 'flywheel', partitions: 3 });
    expect(config.clickhouse.path).toBe('.flywheel/clickhouse');
    expect(config.operators[0]).toEqual({ type: 'validate', maxChars: 200_000, createdAt: createdAtDefaults });
  });

  it('fills and checks the event-time settings of validate and exact-dedupe, naming the field', () => {
    const config = parseConfig({ name: 'p', operators: [{ type: 'validate', createdAt: { onSkew: 'clamp', maxPastMs: 3_600_000 } }, { type: 'exact-dedupe' }] });
    expect(config.operators[0]).toMatchObject({ createdAt: { ...createdAtDefaults, onSkew: 'clamp', maxPastMs: 3_600_000 } });
    expect(config.operators[1]).toMatchObject({ maxSkewMs: 0, allowedLatenessMs: 0, maxEvictionsPerBatch: 1000 });
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'validate', createdAt: { onSkew: 'drop' } }] })).toThrow(/operators\[0\]\.createdAt\.onSkew/);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'validate', createdAt: { min: 10, max: 5 } }] })).toThrow(/min must be before max[\s\S]*operators\[0\]\.createdAt\.max/);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'exact-dedupe', maxEvictionsPerBatch: 0 }] })).toThrow(/operators\[0\]\.maxEvictionsPerBatch/);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'group-filter', maxSkewMs: -1 }] })).toThrow(/operators\[0\]\.maxSkewMs/);
  });

  it('names each wrong field and what is wrong with it', () => {
    const bad = {
      name: 'has space',
      topics: { partitions: 0 },
      operators: [{ type: 'rule-score', format: { pattern: '(' } }, { type: 'threshold-filter', min: { rule: 'high' } }, { type: 'nope' }],
      extra: true,
    };
    let message = '';
    try {
      parseConfig(bad, 'bad.json');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toContain('bad.json is not a valid pipeline config');
    expect(message).toMatch(/at name/);
    expect(message).toMatch(/at topics\.partitions/);
    expect(message).toMatch(/not a valid regular expression[\s\S]*at operators\[0\]\.format\.pattern/);
    expect(message).toMatch(/at operators\[1\]\.min\.rule/);
    expect(message).toMatch(/at operators\[2\]\.type/);
    expect(message).toContain('Unrecognized key: "extra"');
  });

  it('reports unreadable and non-JSON files clearly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, '{ name: ');
    expect(() => loadConfig(file)).toThrow(/is not valid JSON/);
    expect(() => loadConfig(join(dir, 'missing.json'))).toThrow(/cannot read config file/);
    writeFileSync(file, JSON.stringify(minimal));
    expect(loadConfig(file).name).toBe('p');
  });

  it('hashes what decides: operators, not names', () => {
    const a = parseConfig(minimal);
    const b = parseConfig({ ...minimal, name: 'other', run: 'r2' });
    const c = parseConfig({ ...minimal, operators: [{ type: 'validate', maxChars: 10 }] });
    expect(configHash(a)).toBe(configHash(b));
    expect(configHash(a)).not.toBe(configHash(c));
  });

  it('declares the state stores the operators need, and refuses two operators sharing one', () => {
    const config = parseConfig({ name: 'p', operators: [{ type: 'exact-dedupe' }, { type: 'near-dedupe' }, { type: 'validate' }] });
    expect(declaredStores(config.operators).map((s) => s.name)).toEqual(['exact-dedupe', 'near-dedupe']);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'exact-dedupe' }, { type: 'exact-dedupe', scope: 'group' }] })).toThrow(/exact-dedupe appears twice/);
  });

  it('checks operator order and expressions at start', () => {
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'preference-pairs' }, { type: 'validate' }] })).toThrow(/must be the last operator[\s\S]*needs a group-filter/);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'reward-combine', mode: 'expression', expression: 'min(a,' }] })).toThrow(/operators\[0\]\.expression/);
    expect(() => parseConfig({ name: 'p', operators: [{ type: 'rule-filter', rules: [{ name: 'r', when: 'token_count >' }] }] })).toThrow(/operators\[0\]\.rules\[0\]\.when/);
  });

  it('describes the dataflow a config makes', () => {
    const text = describePipeline(parseConfig({ name: 'p', topics: { prefix: 'x' }, operators: [{ type: 'validate' }, { type: 'exact-dedupe' }, { type: 'error-compensate' }] }));
    expect(text).toContain('source  x.rollouts');
    expect(text).toMatch(/2\. exact-dedupe\s+store exact-dedupe → x\.p\.exact-dedupe-changelog/);
    expect(text).toContain('x.labels ⋈ x.p.scored-by-id → x.scorer-errors');
    expect(text).not.toContain('near-dup-index');
  });
});
