/**
 * Secrets from the environment, and the one way to show a URL or an error that may hold one.
 *
 * A secret comes from `NAME` or from the file `NAME_FILE` names (the Docker / Kubernetes
 * secrets convention), never both. It is kept in a {@link Secret}, which prints as `***` however
 * it is printed (template string, JSON, util.inspect), so a Connections object logged by mistake
 * shows no password; only the client construction calls `reveal()`.
 *
 *   const password = secretFromEnv(process.env, 'KAFKA_SASL_PASSWORD');   // Secret | undefined
 *   redactUrl('https://me:hunter2@registry:8081/apis')                    // 'https://me:***@registry:8081/apis'
 */
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

const MASK = '***';

/** A value that must never be echoed: every way of printing it gives `***`. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  /** The value itself, for the client that sends it; nothing else should call this. */
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return MASK;
  }
  toJSON(): string {
    return MASK;
  }
  [inspect.custom](): string {
    return `Secret(${MASK})`;
  }
}

/** A configuration problem found at the edge; the message names the variable and the fix. */
export class ConnectionConfigError extends Error {
  override name = 'ConnectionConfigError';
}

/**
 * Reads a file a `*_FILE` variable names. A trailing newline is dropped (`echo pw > file`
 * writes one; no password ends in one), nothing else.
 */
export function readEnvFile(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConnectionConfigError(`${variable}=${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** `NAME` or the contents of `NAME_FILE`; both set is an error, neither gives undefined. */
export function secretFromEnv(env: NodeJS.ProcessEnv, name: string): Secret | undefined {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (direct !== undefined && direct !== '' && file !== undefined && file !== '') {
    throw new ConnectionConfigError(`${name} and ${name}_FILE are both set; set one of them (the file is the safer: it keeps the secret out of the process environment)`);
  }
  if (file !== undefined && file !== '') {
    const value = readEnvFile(`${name}_FILE`, file).replace(/\r?\n$/, '');
    if (value === '') throw new ConnectionConfigError(`${name}_FILE=${file}: the file is empty`);
    return new Secret(value);
  }
  return direct === undefined || direct === '' ? undefined : new Secret(direct);
}

/** `url` with the password of its userinfo masked; text that is not a URL comes back as it is. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = MASK;
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * `text` with every given secret and every URL password masked, for error messages and logs
 * built from text a library wrote (which may quote a URL or a request it sent).
 */
export function redactText(text: string, secrets: readonly (Secret | undefined)[] = []): string {
  let out = text.replace(/\b([a-z][a-z0-9+.-]*:\/\/[^\s/:@]*):([^\s/@]*)@/gi, `$1:${MASK}@`);
  for (const secret of secrets) {
    const value = secret?.reveal();
    if (value) out = out.split(value).join(MASK);
  }
  return out;
}
