import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { opsHttpSettings } from '../ops/server.ts';
import { loadConfig } from '../pipeline/config.ts';
import { connectionsFromEnv } from '../streams/connections.ts';

// No cluster and no Docker here: the compose file, the Kubernetes manifests and the Dockerfile are
// checked by real validators (deploy/lint-tools.sh installs them, cached) and, for what no
// validator knows, against each other and against the worker's own config validation.

const ROOT = new URL('..', import.meta.url).pathname;
const DEPLOY = join(ROOT, 'deploy');
const K8S = join(DEPLOY, 'k8s');
const COMPOSE = join(DEPLOY, 'compose.yaml');
const DOCKERFILE = join(ROOT, 'Dockerfile');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
const lint = (...args: string[]): Promise<Run> =>
  promisify(execFile)('bash', [join(DEPLOY, 'lint-tools.sh'), ...args], { maxBuffer: 64 << 20 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

// Just enough of the objects' shapes for the cross-file checks; the validators check the rest.
type Labels = Record<string, string>;
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: EnvVar[];
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface Volume {
  name: string;
  configMap?: { name: string; items?: Array<{ key: string; path: string }> };
  secret?: { secretName: string };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: object;
}
interface PodTemplate {
  metadata: { labels: Labels; annotations?: Record<string, string> };
  spec: { securityContext?: { runAsNonRoot?: boolean; runAsUser?: number }; containers: Container[]; volumes?: Volume[] };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Labels } & Labels;
    template?: PodTemplate;
    ports?: Array<{ name: string; port: number; targetPort: string | number }>;
    publishNotReadyAddresses?: boolean;
  };
}
interface ComposeService {
  image?: string;
  entrypoint?: string[];
  command?: string[];
  environment?: Record<string, string>;
  secrets?: string[];
  configs?: Array<{ source: string; target: string }>;
  volumes?: string[];
  ports?: Array<{ target: number; host_ip?: string }>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[]; disable?: boolean };
  restart?: string;
  deploy?: { replicas?: number };
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  configs: Record<string, { file: string }>;
  secrets: Record<string, { file: string }>;
  volumes: Record<string, unknown>;
}

const kustomization = join(K8S, 'kustomization.yaml');
let manifests: string[] = [];
let objects: K8sObject[] = [];
let compose: ComposeFile;

const ofKind = (kind: string) => objects.filter((o) => o.kind === kind);
const named = (kind: string, name: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name} in deploy/k8s`);
  return found;
};
const deployment = (name: string) => named('Deployment', name);
const podOf = (name: string): PodTemplate => deployment(name).spec!.template!;
const containerOf = (name: string): Container => podOf(name).spec.containers[0]!;
const selects = (selector: Labels, labels: Labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The Dockerfile's instructions (continuation lines joined, comments dropped), final stage only. */
function dockerfileRuntime(text: string): Array<{ op: string; args: string }> {
  const instructions: Array<{ op: string; args: string }> = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (pending === '' && /^\s*#/.test(line)) continue;
    pending += line.replace(/\\\s*$/, ' ');
    if (/\\\s*$/.test(line)) continue;
    const m = /^\s*(\w+)\s+(.*)$/.exec(pending);
    pending = '';
    if (m !== null) instructions.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
  }
  const lastFrom = instructions.map((i) => i.op).lastIndexOf('FROM');
  return instructions.slice(lastFrom);
}

/** Serves GET /healthz with `status`; the health-check commands are run against it. */
async function healthServer(status: number): Promise<{ port: number; server: Server; paths: string[] }> {
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(req.url === '/healthz' ? status : 404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server, paths };
}
const runNode = (args: string[], env: Record<string, string> = {}) =>
  promisify(execFile)(args[0]!, args.slice(1), { env: { ...process.env, ...env }, timeout: 20_000 }).then(
    () => 0,
    (err: { code: number }) => err.code,
  );

/**
 * A deployment's environment as the process would see it: compose's `${VAR:-default}` taken at
 * its default, and each *_FILE pointed at a temporary file holding a placeholder secret.
 */
function asProcessEnv(env: Record<string, string>): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'flywheel-env-'));
  return Object.fromEntries(
    Object.entries(env).map(([name, raw]) => {
      const value = raw.replace(/\$\{\w+:-([^}]*)\}/g, '$1');
      if (!name.endsWith('_FILE')) return [name, value];
      const file = join(dir, name);
      writeFileSync(file, 'placeholder\n');
      return [name, file];
    }),
  );
}

beforeAll(async () => {
  const installed = await lint('install');
  expect(installed.code, installed.stderr).toBe(0);
  const listed = await lint('yaml-json', kustomization);
  expect(listed.code, listed.stderr).toBe(0);
  const kustomize = (JSON.parse(listed.stdout) as Record<string, Array<{ resources: string[] }>>)[kustomization]![0]!;
  manifests = kustomize.resources.map((r) => join(K8S, r));
  const parsed = await lint('yaml-json', COMPOSE, ...manifests);
  expect(parsed.code, parsed.stderr).toBe(0);
  const docs = JSON.parse(parsed.stdout) as Record<string, unknown[]>;
  compose = docs[COMPOSE]![0] as ComposeFile;
  objects = manifests.flatMap((m) => docs[m]!.filter((d) => d !== null) as K8sObject[]);
}, 600_000);

describe('Kubernetes manifests (deploy/k8s)', () => {
  it('kustomization.yaml lists every manifest in the directory', () => {
    const files = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    expect(manifests.map((m) => m.slice(K8S.length + 1)).sort()).toEqual(files.sort());
    expect(ofKind('Deployment').map((d) => d.metadata.name).sort()).toEqual(['flywheel-trainer', 'flywheel-worker']);
    for (const kind of ['Namespace', 'ConfigMap', 'Secret', 'PodDisruptionBudget', 'Service', 'PersistentVolumeClaim']) expect(ofKind(kind).length).toBeGreaterThan(0);
    for (const o of objects.filter((o) => o.kind !== 'Namespace')) expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).toBe('flywheel');
  });

  it('every object validates in strict mode against the Kubernetes schemas, with none skipped', async () => {
    const { code, stdout, stderr } = await lint('k8s', ...manifests);
    expect(code, stdout + stderr).toBe(0);
    // One summary per Kubernetes version in lint-tools.sh; each counts every object as valid.
    const summaries = [...stdout.matchAll(/Summary: (\d+) resources? found in (\d+) files? - Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)/g)];
    expect(summaries.length).toBeGreaterThanOrEqual(2);
    for (const [, found, files, valid, invalid, errors, skipped] of summaries) {
      expect([Number(found), Number(files), Number(valid)]).toEqual([objects.length, manifests.length, objects.length]);
      expect([invalid, errors, skipped]).toEqual(['0', '0', '0']);
    }
  });

  it('rejects a broken worker Deployment: a string replica count, an unknown field, an unknown kind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-k8s-'));
    const broken = (name: string, edit: (d: K8sObject & Record<string, unknown>) => void) => {
      const copy = structuredClone(deployment('flywheel-worker')) as K8sObject & Record<string, unknown>;
      edit(copy);
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, JSON.stringify(copy)); // JSON is YAML
      return file;
    };
    const cases: Array<[string, RegExp]> = [
      [broken('replicas', (d) => Object.assign(d.spec!, { replicas: 'two' })), /\/spec\/replicas.*got string, want null or integer/],
      [broken('typo', (d) => Object.assign(d.spec!.template!.spec.containers[0]!, { livenessprobe: { httpGet: { path: '/healthz', port: 'http' } } })), /additional properties 'livenessprobe' not allowed/],
      [broken('kind', (d) => Object.assign(d, { kind: 'Deploymnet' })), /could not find schema for Deploymnet/],
    ];
    for (const [file, reason] of cases) {
      const { code, stdout } = await lint('k8s', file);
      expect(code, file).toBe(1);
      expect(stdout).toMatch(reason);
    }
  });

  it('the ConfigMap carries deploy/pipeline.json and deploy/trainer.json, and the pipeline passes the config loader', () => {
    const config = named('ConfigMap', 'flywheel-config').data!;
    const lags = (file: string) => `deploy/k8s/config.yaml lags behind deploy/${file}: run bash deploy/lint-tools.sh k8s-config`;
    expect(JSON.parse(config['pipeline.json']!), lags('pipeline.json')).toEqual(JSON.parse(readFileSync(join(DEPLOY, 'pipeline.json'), 'utf8')));
    expect(JSON.parse(config['trainer.json']!), lags('trainer.json')).toEqual(JSON.parse(readFileSync(join(DEPLOY, 'trainer.json'), 'utf8')));
    const file = join(mkdtempSync(join(tmpdir(), 'flywheel-cm-')), 'pipeline.json');
    writeFileSync(file, config['pipeline.json']!);
    const pipeline = loadConfig(file);
    // More workers than partitions would sit idle (see the comment in worker-deployment.yaml).
    expect(deployment('flywheel-worker').spec!.replicas).toBeLessThanOrEqual(pipeline.topics.partitions);
    expect(deployment('flywheel-trainer').spec!.replicas).toBe(1);
  });

  it('probes, port and scrape annotations agree with each other and with the Service', () => {
    const worker = containerOf('flywheel-worker');
    const http = worker.ports!.find((p) => p.name === 'http')!;
    expect(worker.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(worker.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(worker.startupProbe!.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(worker.env!.find((e) => e.name === 'FLYWHEEL_HTTP_PORT')!.value).toBe(String(http.containerPort));
    expect(worker.env!.find((e) => e.name === 'FLYWHEEL_HTTP_HOST')!.value).toBe('0.0.0.0');
    expect(podOf('flywheel-worker').metadata.annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(http.containerPort), 'prometheus.io/path': '/metrics' });
    const service = named('Service', 'flywheel-worker-metrics').spec!;
    expect(service.ports!.map((p) => [p.port, p.targetPort])).toEqual([[http.containerPort, 'http']]);
    expect(service.publishNotReadyAddresses).toBe(true);
  });

  it('selectors pick their own pods: the PDB and the Service the workers only', () => {
    for (const d of ofKind('Deployment')) expect(selects(d.spec!.selector!.matchLabels!, d.spec!.template!.metadata.labels), d.metadata.name).toBe(true);
    const worker = podOf('flywheel-worker').metadata.labels;
    const trainer = podOf('flywheel-trainer').metadata.labels;
    for (const selector of [named('PodDisruptionBudget', 'flywheel-worker').spec!.selector!.matchLabels!, named('Service', 'flywheel-worker-metrics').spec!.selector as Labels]) {
      expect(selects(selector, worker)).toBe(true);
      expect(selects(selector, trainer)).toBe(false);
    }
  });

  it('every ConfigMap, Secret, key and claim a pod refers to exists, every mount has a volume, *_FILE names a mounted key', () => {
    const configMaps = new Map(ofKind('ConfigMap').map((c) => [c.metadata.name, Object.keys(c.data ?? {})]));
    const secrets = new Map(ofKind('Secret').map((s) => [s.metadata.name, Object.keys(s.stringData ?? s.data ?? {})]));
    const claims = new Set(ofKind('PersistentVolumeClaim').map((c) => c.metadata.name));
    for (const d of ofKind('Deployment')) {
      const pod = d.spec!.template!.spec;
      const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
      for (const v of volumes.values()) {
        if (v.configMap) for (const item of v.configMap.items ?? []) expect(configMaps.get(v.configMap.name), `${d.metadata.name} ${v.name}`).toContain(item.key);
        if (v.secret) expect(secrets.has(v.secret.secretName)).toBe(true);
        if (v.persistentVolumeClaim) expect(claims.has(v.persistentVolumeClaim.claimName)).toBe(true);
      }
      for (const c of pod.containers) {
        for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), `${d.metadata.name}: mount ${m.name}`).toBe(true);
        for (const f of c.envFrom ?? []) expect(configMaps.has(f.configMapRef!.name)).toBe(true);
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) expect(secrets.get(ref.name), `${d.metadata.name}: ${e.name}`).toContain(ref.key);
          if (e.name.endsWith('_FILE')) {
            const mount = (c.volumeMounts ?? []).find((m) => e.value!.startsWith(`${m.mountPath}/`))!;
            const secret = volumes.get(mount.name)!.secret!;
            expect(secrets.get(secret.secretName), `${d.metadata.name}: ${e.name}`).toContain(e.value!.slice(mount.mountPath.length + 1));
          }
        }
        // The command's config file is the one the ConfigMap volume mounts.
        const configPath = c.args![c.args!.indexOf('--config') + 1]!;
        const mount = c.volumeMounts!.find((m) => configPath.startsWith(`${m.mountPath}/`))!;
        expect(volumes.get(mount.name)!.configMap!.items!.map((i) => i.path)).toContain(configPath.slice(mount.mountPath.length + 1));
      }
    }
    // The worker finds its services through the ConfigMap (streams/connections.ts reads these).
    const env = named('ConfigMap', 'flywheel-env').data!;
    for (const name of ['KAFKA_BROKERS', 'SCHEMA_REGISTRY_URL', 'CLICKHOUSE_URL']) expect(env[name], name).toBeTruthy();
  });

  it("the pods' environment passes the worker's own connection and ops settings: SASL_SSL, the secrets' users, 0.0.0.0 on the probed port", () => {
    const shared = named('ConfigMap', 'flywheel-env').data!;
    const secret = named('Secret', 'flywheel-secrets').stringData!;
    const pipeline = loadConfig(join(DEPLOY, 'pipeline.json'));
    for (const name of ['flywheel-worker', 'flywheel-trainer']) {
      const own = Object.fromEntries(containerOf(name).env!.map((e) => [e.name, e.value ?? secret[e.valueFrom!.secretKeyRef!.key]!]));
      const env = asProcessEnv({ ...shared, ...own });
      const connections = connectionsFromEnv(env);
      expect(connections.kafka?.protocol, name).toBe('SASL_SSL');
      expect(connections.kafka?.sasl?.username, name).toBe(secret['kafka-sasl-username']);
      expect(connections.schemaRegistry?.auth?.username, name).toBe(secret['schema-registry-username']);
      if (name === 'flywheel-worker') {
        expect(connections.clickhouse?.auth?.username).toBe(shared.CLICKHOUSE_USER);
        const port = containerOf(name).ports!.find((p) => p.name === 'http')!.containerPort;
        expect(opsHttpSettings(pipeline.ops.http, env)).toEqual({ host: '0.0.0.0', port });
      }
    }
  });

  it('the Secret holds placeholders only, and every pod runs non-root without privilege escalation', () => {
    const secret = named('Secret', 'flywheel-secrets').stringData!;
    for (const [key, value] of Object.entries(secret)) if (/password/.test(key)) expect(value, key).toBe('REPLACE-ME');
    for (const d of ofKind('Deployment')) {
      const pod = d.spec!.template!.spec;
      expect(pod.securityContext!.runAsNonRoot).toBe(true);
      for (const c of pod.containers) {
        expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
      }
    }
  });
});

describe('compose stack (deploy/compose.yaml)', () => {
  it('validates against the Compose Specification schema', async () => {
    const { code, stdout, stderr } = await lint('compose', COMPOSE);
    expect(code, stdout + stderr).toBe(0);
    expect(stdout).toContain('validation done');
  });

  it('rejects a broken compose file: an unknown depends_on condition, a misspelt key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flywheel-compose-'));
    const cases: Array<[(c: ComposeFile) => void, RegExp]> = [
      [(c) => (c.services.worker!.depends_on!.kafka!.condition = 'service_happy'), /service_happy/],
      [(c) => Object.assign(c.services.worker!, { dependson: c.services.worker!.depends_on }), /'dependson' was unexpected/],
    ];
    for (const [i, [edit, reason]] of cases.entries()) {
      const copy = structuredClone(compose);
      edit(copy);
      const file = join(dir, `compose-${i}.yaml`);
      writeFileSync(file, JSON.stringify(copy));
      const { code, stdout } = await lint('compose', file);
      expect(code).toBe(1);
      expect(stdout).toMatch(reason);
    }
  });

  it('every long-running service has a health check, and starts only once what it needs is healthy', () => {
    const services = compose.services;
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['kafka', 'registry', 'clickhouse', 'worker', 'trainer']));
    const oneShot = (name: string) => services[name]!.restart === 'no';
    for (const [name, s] of Object.entries(services)) {
      if (oneShot(name)) continue;
      expect(s.healthcheck?.test.length, name).toBeGreaterThan(0);
      expect(s.healthcheck?.disable, name).toBeFalsy();
    }
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        expect(services[dep], `${name} depends on ${dep}`).toBeDefined();
        expect(condition, `${name} -> ${dep}`).toBe(oneShot(dep) ? 'service_completed_successfully' : 'service_healthy');
      }
    }
    expect(Object.keys(services.worker!.depends_on!).sort()).toEqual(['clickhouse', 'kafka', 'registry']);
  });

  it('workers: the connections streams/connections.ts reads, secrets as *_FILE, config from deploy/pipeline.json, replicas within the partitions', () => {
    const worker = compose.services.worker!;
    const pipeline = loadConfig(join(DEPLOY, compose.configs[worker.configs![0]!.source]!.file));
    expect(compose.configs.pipeline!.file).toBe('./pipeline.json');
    expect(worker.command).toEqual(['run', '--config', worker.configs![0]!.target]);
    expect(worker.deploy!.replicas).toBeLessThanOrEqual(pipeline.topics.partitions);
    for (const s of [worker, compose.services.trainer!]) {
      for (const name of ['KAFKA_BROKERS', 'SCHEMA_REGISTRY_URL', 'CLICKHOUSE_URL']) expect(s.environment![name], name).toBeTruthy();
      for (const [name, value] of Object.entries(s.environment!)) {
        expect(name, 'a password in the environment').not.toMatch(/PASSWORD$/);
        if (name.endsWith('_FILE')) {
          const secret = value.replace('/run/secrets/', '');
          expect(s.secrets, name).toContain(secret);
          expect(compose.secrets[secret], name).toBeDefined();
        }
      }
    }
    for (const s of Object.values(compose.services)) for (const secret of s.secrets ?? []) expect(compose.secrets[secret]).toBeDefined();
    const trainer = compose.services.trainer!;
    expect(trainer.deploy!.replicas).toBe(1);
    expect(trainer.command).toEqual(['train', '--config', trainer.configs![0]!.target]);
    expect(compose.configs[trainer.configs![0]!.source]!.file).toBe('./trainer.json');
  });
  it("the workers' and trainer's environment passes the worker's own connection and ops settings, and matches the broker, registry and ClickHouse", () => {
    const services = compose.services;
    const broker = services.kafka!.entrypoint!.join('\n');
    const [, protocol, address] = /^advertised\.listeners=(\w+):\/\/(\S+)$/m.exec(broker)!;
    const mechanism = /^sasl\.enabled\.mechanisms=(\S+)$/m.exec(broker)![1]!;
    const pipeline = loadConfig(join(DEPLOY, 'pipeline.json'));
    for (const name of ['worker', 'trainer']) {
      const s = services[name]!;
      const env = asProcessEnv(s.environment!);
      const connections = connectionsFromEnv(env);
      expect(connections.kafkaBrokers, name).toEqual([address]);
      expect(connections.kafka?.protocol, name).toBe(protocol);
      expect(connections.kafka?.sasl?.mechanism.toUpperCase(), name).toBe(mechanism);
      // The broker makes its SCRAM user from the same name and the same secret file.
      expect(connections.kafka?.sasl?.username).toBe(asProcessEnv(services.kafka!.environment!).KAFKA_SASL_USERNAME);
      expect(services.kafka!.secrets).toContain(s.environment!.KAFKA_SASL_PASSWORD_FILE!.replace('/run/secrets/', ''));
      expect(broker).toContain('/run/secrets/kafka_sasl_password');
      expect(connections.schemaRegistryUrl, name).toBe(`http://registry:${services.registry!.environment!.QUARKUS_HTTP_PORT}/apis/ccompat/v7`);
      expect(connections.clickhouse?.auth?.username, name).toBe(services.clickhouse!.environment!.CLICKHOUSE_USER);
      expect(s.environment!.CLICKHOUSE_PASSWORD_FILE).toBe(services.clickhouse!.environment!.CLICKHOUSE_PASSWORD_FILE);
    }
    expect(opsHttpSettings(pipeline.ops.http, asProcessEnv(services.worker!.environment!))).toEqual({ host: '0.0.0.0', port: services.worker!.ports![0]!.target });
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(DOCKERFILE, 'utf8');
  const runtime = dockerfileRuntime(text);
  const arg = (op: string) => runtime.filter((i) => i.op === op).map((i) => i.args);
  const env = Object.fromEntries(arg('ENV').flatMap((a) => [...a.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!])));
  const port = Number(env.FLYWHEEL_HTTP_PORT);
  const healthcheck = JSON.parse(arg('HEALTHCHECK')[0]!.replace(/^.*?CMD\s+/, '')) as string[];

  it('passes hadolint', async () => {
    const { code, stdout, stderr } = await lint('dockerfile', DOCKERFILE);
    expect(code, stdout + stderr).toBe(0);
  });

  it('hadolint rejects a broken copy: a `cd` in RUN, root as the last user', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'flywheel-docker-')), 'Dockerfile');
    writeFileSync(file, `${text}\nUSER root\nRUN cd /app && ls\n`);
    const { code, stdout } = await lint('dockerfile', file);
    expect(code).toBe(1);
    expect(stdout).toMatch(/DL3002/);
    expect(stdout).toMatch(/DL3003/);
  });

  it('the runtime stage: non-root numeric user as in Kubernetes, the CLI entry, the worker by default, the port everywhere the same', () => {
    expect(arg('USER')).toEqual([`${podOf('flywheel-worker').spec.securityContext!.runAsUser}:1000`]);
    expect(JSON.parse(arg('ENTRYPOINT')[0]!)).toEqual(['node', 'dist/cli/main.js']);
    // dist/ mirrors the source tree: the entry is the compiled cli/main.ts.
    expect(readdirSync(join(ROOT, 'cli'))).toContain('main.ts');
    expect(JSON.parse(arg('CMD')[0]!)).toEqual(compose.services.worker!.command);
    expect(JSON.parse(arg('CMD')[0]!)).toEqual(containerOf('flywheel-worker').args);
    expect(arg('EXPOSE')).toEqual([String(port)]);
    expect(env.FLYWHEEL_HTTP_HOST).toBe('0.0.0.0');
    expect(compose.services.worker!.environment!.FLYWHEEL_HTTP_PORT).toBe(String(port));
    expect(compose.services.worker!.ports).toEqual([{ target: port, host_ip: '127.0.0.1', protocol: 'tcp' }]);
    expect(containerOf('flywheel-worker').ports).toEqual([{ name: 'http', containerPort: port, protocol: 'TCP' }]);
    // Build output and production dependencies only: no sources, no dev dependencies.
    expect(arg('COPY').some((a) => /^\.\s/.test(a) || a.startsWith('. '))).toBe(false);
    expect(text).toMatch(/npm install --omit=dev/);
    expect(text).toMatch(/npm run build/);
  });

  it('the production install (`npm install --omit=dev`: package.json\'s dependencies) provides every package the built code imports', () => {
    const prodDeps = text.slice(text.indexOf('AS prod-deps'), text.indexOf('AS build'));
    expect(prodDeps).toMatch(/npm install --omit=dev/);
    const installed = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; dependencies: Record<string, string> };
    // Every bare import of the sources `npm run build` compiles (tsconfig.build.json), by package.
    const build = ts.parseConfigFileTextToJson('tsconfig.build.json', readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')).config as { include: string[] };
    const sources = (path: string): string[] => {
      const full = join(ROOT, path);
      const stat = statSync(full, { throwIfNoEntry: false });
      if (stat === undefined || path.endsWith('.test.ts') || path.endsWith('node_modules')) return [];
      if (stat.isFile()) return path.endsWith('.ts') ? [full] : [];
      return readdirSync(full).flatMap((name) => sources(join(path, name)));
    };
    const packages = new Set<string>();
    for (const file of build.include.flatMap(sources)) {
      const code = readFileSync(file, 'utf8');
      const specifiers = [
        ...[...code.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\sfrom\s+)?'([^'./][^']*)'/gm)].map((m) => m[1]!),
        ...[...code.matchAll(/(?:import|require|resolve)\(\s*'([^'./][^']*)'\s*\)/g)].map((m) => m[1]!),
      ];
      for (const s of specifiers) if (!s.startsWith('node:') && s !== installed.name) packages.add(s.split('/').slice(0, s.startsWith('@') ? 2 : 1).join('/'));
    }
    expect([...packages]).toEqual(expect.arrayContaining(['rxjs', 'kafkajs', 'zod']));
    // A dev (or peer-only) dependency is not in the image: the built code must not need one.
    for (const name of packages) expect(installed.dependencies, `${name} is imported by the built code`).toHaveProperty([name]);
  });

  it('.dockerignore keeps out node_modules, state and secrets, and nothing the Dockerfile copies', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    for (const path of ['node_modules', '.git', '.flywheel', 'deploy/secrets']) expect(ignored).toContain(path);
    const copied = [...text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    for (const path of copied.filter((p) => p !== '.')) expect(ignored.some((i) => path === i || path.startsWith(`${i}/`)), path).toBe(false);
  });

  it('the image and compose health checks pass on a 200 from /healthz and fail otherwise', async () => {
    const composeCheck = compose.services.worker!.healthcheck!.test;
    expect(composeCheck[0]).toBe('CMD');
    for (const [name, command, portEnv] of [
      ['image', healthcheck, (p: number) => ({ FLYWHEEL_HTTP_PORT: String(p) })],
      // The compose check names the port itself; it is rewritten to the test server's.
      ['compose', composeCheck.slice(1), () => ({})],
    ] as const) {
      const at = (p: number) => (name === 'compose' ? command.map((a) => a.replace(`:${port}/`, `:${p}/`)) : [...command]);
      expect(command.join(' '), name).toContain(name === 'compose' ? `:${port}/healthz` : `'${port}') + '/healthz'`);
      const up = await healthServer(200);
      const down = await healthServer(503);
      try {
        expect(await runNode(at(up.port), portEnv(up.port)), `${name} on 200`).toBe(0);
        expect(up.paths).toEqual(['/healthz']);
        expect(await runNode(at(down.port), portEnv(down.port)), `${name} on 503`).toBe(1);
      } finally {
        await Promise.all([up, down].map(({ server }) => new Promise((resolve) => server.close(resolve))));
      }
      // Nothing listening at all.
      const closed = (await healthServer(200));
      await new Promise((resolve) => closed.server.close(resolve));
      expect(await runNode(at(closed.port), portEnv(closed.port)), `${name} with no server`).toBe(1);
    }
  });
});
