/**
 * The bench's side of bench/worker.ts: spawns pipeline workers as child processes and turns
 * their IPC reports into timings. Nothing is polled: every wait resolves on the report that
 * satisfies it, and rejects when the worker fails, exits, or the timeout passes.
 *
 *   const w = await BenchWorker.spawn('pipeline.json', job);   // imported and validated
 *   w.go();
 *   const ready = await w.ready;
 *   const done = await w.processedAt(100_000, 600_000);     // epoch ms of that commit
 *   await w.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { now, REPO } from './kafka.ts';
import type { GcReport } from './profile.ts';
import type { WorkerJob, WorkerMessage } from './worker.ts';

interface Waiter {
  reached: () => boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class BenchWorker {
  /** Epoch ms when the process was spawned. */
  readonly spawnedAt: number;
  readonly commits: Array<{ t: number; processed: number }> = [];
  readonly stores: Array<{ t: number; stored: number }> = [];
  readonly ready: Promise<number>;
  gc: GcReport | undefined;
  /** Epoch ms of the processor's first fetch request (its group joined), if the worker saw it. */
  firstFetch: number | undefined;
  private readonly log: string[] = [];
  private readonly waiters = new Set<Waiter>();
  private failure: Error | undefined;
  private exited = false;
  private readonly exit: Promise<void>;
  private markReady!: (t: number) => void;
  private notReady!: (err: Error) => void;

  private constructor(
    readonly label: string,
    private readonly child: ChildProcess,
  ) {
    this.spawnedAt = now();
    this.ready = new Promise<number>((resolve, reject) => {
      this.markReady = resolve;
      this.notReady = reject;
    });
    // A worker that fails before it is ready must not leave an unhandled rejection behind.
    this.ready.catch(() => undefined);
    child.stdout!.on('data', (d: Buffer) => this.keep(d));
    child.stderr!.on('data', (d: Buffer) => this.keep(d));
    child.on('message', (m: WorkerMessage) => this.onMessage(m));
    this.exit = new Promise<void>((resolve) =>
      child.once('exit', (code, signal) => {
        this.exited = true;
        if (this.failure === undefined && code !== 0) this.fail(new Error(`worker ${label} exited (${signal ?? code})`));
        this.fail(new Error(`worker ${label} has exited`));
        resolve();
      }),
    );
  }

  /** Spawns a worker and resolves once it has imported everything and validated its config. */
  static async spawn(label: string, job: WorkerJob, env: NodeJS.ProcessEnv = process.env): Promise<BenchWorker> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'bench/worker.ts'), JSON.stringify(job)], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    const worker = new BenchWorker(label, child);
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: WorkerMessage) => {
        if (m.type === 'loaded') {
          child.off('message', onMessage);
          resolve();
        }
      };
      child.on('message', onMessage);
      child.once('exit', () => reject(worker.error(`worker ${label} exited during start-up`)));
    });
    return worker;
  }

  /** Starts the pipeline (startPipeline) in the worker. */
  go(): void {
    this.child.send({ type: 'go' });
  }

  get processed(): number {
    return this.commits.at(-1)?.processed ?? 0;
  }

  get stored(): number {
    return this.stores.at(-1)?.stored ?? 0;
  }

  /** Epoch ms of the commit that brought `processed` to at least `records`. */
  async processedAt(records: number, timeoutMs: number): Promise<number> {
    await this.until(() => this.processed >= records, timeoutMs, () => `${records} records processed (${this.processed} so far)`);
    return this.commits.find((c) => c.processed >= records)!.t;
  }

  /** Epoch ms of the insert that brought samples + dead letters stored to at least `records`. */
  async storedAt(records: number, timeoutMs: number): Promise<number> {
    await this.until(() => this.stored >= records, timeoutMs, () => `${records} records stored (${this.stored} so far)`);
    return this.stores.find((s) => s.stored >= records)!.t;
  }

  /** The GC report of the window first fetch → `job.expect` processed. */
  async gcReport(timeoutMs: number): Promise<GcReport> {
    await this.until(() => this.gc !== undefined, timeoutMs, () => 'its GC report');
    return this.gc!;
  }

  until(reached: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (reached()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      // A long wait says where it is, now and then (stderr only).
      const status = setInterval(() => process.stderr.write(`[bench] ${this.label}: ${this.processed} processed, ${this.stored} stored; waiting for ${what()}\n`), 15_000);
      const done = () => (clearTimeout(timer), clearInterval(status));
      const waiter: Waiter = {
        reached,
        resolve: () => (done(), resolve()),
        reject: (err) => (done(), reject(err)),
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        clearInterval(status);
        reject(this.error(`worker ${this.label}: timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what()}`));
      }, timeoutMs);
      // A wait that lost a race (scale.ts) must not keep the bench alive.
      timer.unref();
      status.unref();
      this.waiters.add(waiter);
    });
  }

  /** Stops the pipeline cleanly (offsets committed, producers closed) and waits for the exit. */
  async stop(): Promise<void> {
    if (!this.exited) {
      this.child.send({ type: 'stop' });
      const kill = setTimeout(() => this.child.kill('SIGKILL'), 60_000);
      await this.exit;
      clearTimeout(kill);
    }
  }

  /** The worker's own output (its start-up steps, warnings), for a failure report. */
  output(lines = 30): string {
    return this.log.join('').split('\n').slice(-lines).join('\n');
  }

  private onMessage(m: WorkerMessage): void {
    if (m.type === 'ready') this.markReady(m.t);
    else if (m.type === 'fetching') this.firstFetch = m.t;
    else if (m.type === 'commit') this.commits.push({ t: m.t, processed: m.processed });
    else if (m.type === 'stored') this.stores.push({ t: m.t, stored: m.stored });
    else if (m.type === 'gc') this.gc = m.report;
    else if (m.type === 'failed') this.fail(new Error(`worker ${this.label} failed: ${m.error}`));
    for (const w of [...this.waiters]) {
      if (w.reached()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.notReady(this.error(this.failure.message));
    for (const w of this.waiters) w.reject(this.error(this.failure.message));
    this.waiters.clear();
  }

  private error(message: string): Error {
    return new Error(`${message}\n--- last lines of its output:\n${this.output()}`);
  }

  private keep(d: Buffer): void {
    this.log.push(d.toString());
    if (this.log.length > 500) this.log.splice(0, this.log.length - 500);
    if (process.env.FLYWHEEL_BENCH_VERBOSE) process.stderr.write(`[${this.label}] ${d.toString()}`);
  }
}
