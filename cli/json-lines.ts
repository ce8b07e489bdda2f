import type { z } from 'zod';

/**
 * Parses JSON lines against `schema`, the one way `flywheel produce` and `flywheel label` read
 * their input: blank lines are skipped; a line that is not JSON or does not fit is reported as
 * `line <n>: <field>: <reason>` (1-based) and left out, never passed on half-made.
 *
 * @example
 * parseJsonLines('{"a":1}\n\n{"a":"x"}', z.strictObject({ a: z.number() }))
 * // → { values: [{ a: 1 }], errors: ['line 3: a: <zod's reason>'] }
 */
export function parseJsonLines<S extends z.ZodType>(text: string, schema: S): { values: z.output<S>[]; errors: string[] } {
  const values: z.output<S>[] = [];
  const errors: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (err) {
      errors.push(`line ${i + 1}: not JSON (${(err as Error).message})`);
      return;
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      errors.push(`line ${i + 1}: ${parsed.error.issues.map((e) => `${e.path.join('.') || '(record)'}: ${e.message}`).join('; ')}`);
      return;
    }
    values.push(parsed.data);
  });
  return { values, errors };
}
