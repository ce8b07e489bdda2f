/**
 * What garbage collection costs a process over a window of its run, measured inside it:
 *
 * - GC share: the summed durations of `perf_hooks` 'gc' entries that start inside the window,
 *   ÷ the window's wall time (pauses on the main thread; V8's concurrent marking on helper
 *   threads is not in them).
 * - Bytes allocated: V8's GCProfiler reports the used heap before and after every GC, so what
 *   was allocated between two collections is `before(gc i) − after(gc i−1)`; the sum over the
 *   window, plus the growth since the last GC, is the JS heap allocated in it. Off-heap memory
 *   (Buffer contents) is not in the JS heap and so not counted.
 *
 *   const gc = new GcWindow();   // observing from here
 *   gc.open();  …work on n records…  const { gcShare, allocatedBytes } = gc.close(n);
 */
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import v8 from 'node:v8';

export interface GcReport {
  /** Wall time of the window, ms. */
  wallMs: number;
  /** Summed GC pause time inside the window, ms. */
  gcMs: number;
  gcShare: number;
  collections: number;
  /** JS heap allocated inside the window (estimate, see above), bytes. */
  allocatedBytes: number;
  /** Used JS heap at the end of the window, bytes. */
  heapUsedBytes: number;
  /** The work done in the window, as the caller counts it (e.g. records processed). */
  records: number;
  /** CPU time the whole process (every thread: JS, libuv, an embedded engine) used in the window, ms. */
  cpuMs: number;
}

interface HeapStats {
  usedHeapSize: number;
}

interface GcStatistic {
  beforeGC: { heapStatistics: HeapStats };
  afterGC: { heapStatistics: HeapStats };
}

export class GcWindow {
  private readonly entries: PerformanceEntry[] = [];
  private readonly observer = new PerformanceObserver((list) => void this.entries.push(...list.getEntries()));
  private profiler: { start(): void; stop(): { statistics: GcStatistic[] } } | undefined;
  private openedAt = 0;
  private usedAtOpen = 0;
  private cpuAtOpen: NodeJS.CpuUsage | undefined;

  constructor() {
    this.observer.observe({ entryTypes: ['gc'] });
  }

  /** Starts the window (again: a second call moves its start to now). */
  open(): void {
    this.profiler?.stop();
    this.openedAt = performance.now();
    this.cpuAtOpen = process.cpuUsage();
    this.usedAtOpen = v8.getHeapStatistics().used_heap_size;
    const Profiler = (v8 as unknown as { GCProfiler?: new () => { start(): void; stop(): { statistics: GcStatistic[] } } }).GCProfiler;
    this.profiler = Profiler === undefined ? undefined : new Profiler();
    this.profiler?.start();
  }

  close(records: number): GcReport {
    const closedAt = performance.now();
    const cpu = process.cpuUsage(this.cpuAtOpen);
    const usedAtClose = v8.getHeapStatistics().used_heap_size;
    const statistics = this.profiler?.stop().statistics ?? [];
    // Entries are delivered asynchronously; those of the last few ms may still be queued.
    this.entries.push(...this.observer.takeRecords());
    this.observer.disconnect();
    const inside = this.entries.filter((e) => e.startTime >= this.openedAt && e.startTime <= closedAt);
    const gcMs = inside.reduce((sum, e) => sum + e.duration, 0);
    let allocated = 0;
    let after = this.usedAtOpen;
    for (const s of statistics) {
      allocated += Math.max(0, s.beforeGC.heapStatistics.usedHeapSize - after);
      after = s.afterGC.heapStatistics.usedHeapSize;
    }
    allocated += Math.max(0, usedAtClose - after);
    const wallMs = closedAt - this.openedAt;
    return { wallMs, gcMs, gcShare: wallMs > 0 ? gcMs / wallMs : 0, collections: inside.length, allocatedBytes: this.profiler === undefined ? Number.NaN : allocated, heapUsedBytes: usedAtClose, records, cpuMs: (cpu.user + cpu.system) / 1000 };
  }
}

/**
 * A CPU profile of a window of this process's run (V8's sampling profiler through
 * `node:inspector`), written as a `.cpuprofile` (Chrome DevTools' format) and summarised by
 * where the self time goes: per package under node_modules, per file of this repo, and V8's
 * own buckets ("(garbage collector)", "(program)", "(idle)").
 *
 *   const cpu = await CpuWindow.start();  …work…  const { top } = await cpu.stop('/tmp/w.cpuprofile');
 */
export class CpuWindow {
  private constructor(private readonly session: import('node:inspector').Session) {}

  static async start(intervalUs = 200): Promise<CpuWindow> {
    const { Session } = await import('node:inspector');
    const session = new Session();
    session.connect();
    const post = (method: string, params?: object) => new Promise<void>((resolve, reject) => session.post(method, params ?? {}, (err) => (err ? reject(err) : resolve())));
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: intervalUs });
    await post('Profiler.start');
    return new CpuWindow(session);
  }

  /** Stops, writes the profile to `file`, and returns the self-time shares (largest first). */
  async stop(file: string): Promise<{ top: Array<{ where: string; share: number }> }> {
    const profile = await new Promise<CpuProfile>((resolve, reject) =>
      this.session.post('Profiler.stop', (err, result) => (err ? reject(err) : resolve((result as { profile: CpuProfile }).profile))),
    );
    this.session.disconnect();
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, JSON.stringify(profile));
    return { top: selfTimeBy(profile, bucketOf) };
  }
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

export interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const REPO_URL = new URL('../', import.meta.url).href;

/** A package under node_modules, a file of the repo, or V8's bucket for a frame without a script. */
export function bucketOf(frame: CpuProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : `(native) ${functionName}`;
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (modules !== null) return modules[1]!;
  if (url.startsWith('node:')) return url;
  return url.startsWith(REPO_URL) ? url.slice(REPO_URL.length) : url;
}

/** Self time per bucket (sample time deltas summed by the sampled node's bucket), as shares of the total. */
export function selfTimeBy(profile: CpuProfile, bucket: (frame: CpuProfileNode['callFrame']) => string): Array<{ where: string; share: number }> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const sums = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const where = bucket(byId.get(id)!.callFrame);
    sums.set(where, (sums.get(where) ?? 0) + dt);
    total += dt;
  });
  return [...sums].map(([where, t]) => ({ where, share: total > 0 ? t / total : 0 })).sort((a, b) => b.share - a.share);
}

interface HeapProfileNode {
  callFrame: CpuProfileNode['callFrame'];
  selfSize: number;
  children: HeapProfileNode[];
}

/**
 * Where a window of the run allocates its JS heap: V8's sampling heap profiler with the objects
 * that young and old GCs collected kept in the samples, so the profile counts what was
 * allocated, not what survived. Written as a `.heapprofile` (DevTools' format) and summarised
 * as bytes allocated per function (file:line, or package), largest first.
 *
 *   const heap = await HeapWindow.start();  …work…  const { top } = await heap.stop('/tmp/w.heapprofile');
 */
export class HeapWindow {
  private constructor(private readonly session: import('node:inspector').Session) {}

  static async start(samplingIntervalBytes = 16_384): Promise<HeapWindow> {
    const { Session } = await import('node:inspector');
    const session = new Session();
    session.connect();
    await new Promise<void>((resolve, reject) =>
      session.post('HeapProfiler.startSampling', { samplingInterval: samplingIntervalBytes, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }, (err) => (err ? reject(err) : resolve())),
    );
    return new HeapWindow(session);
  }

  /** Stops, writes the profile to `file`, and returns each allocating function's share of the bytes sampled. */
  async stop(file: string): Promise<{ totalBytes: number; top: Array<{ where: string; share: number }> }> {
    const profile = await new Promise<{ head: HeapProfileNode }>((resolve, reject) =>
      this.session.post('HeapProfiler.stopSampling', (err, result) => (err ? reject(err) : resolve((result as { profile: { head: HeapProfileNode } }).profile))),
    );
    this.session.disconnect();
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, JSON.stringify(profile));
    const sums = new Map<string, number>();
    let total = 0;
    const walk = (node: HeapProfileNode): void => {
      if (node.selfSize > 0) {
        const frame = node.callFrame;
        const at = bucketOf(frame);
        const where = frame.url === '' ? at : `${frame.functionName || '(anonymous)'} ${at}:${frame.lineNumber + 1}`;
        sums.set(where, (sums.get(where) ?? 0) + node.selfSize);
        total += node.selfSize;
      }
      for (const child of node.children) walk(child);
    };
    walk(profile.head);
    return { totalBytes: total, top: [...sums].map(([where, bytes]) => ({ where, share: total > 0 ? bytes / total : 0 })).sort((a, b) => b.share - a.share) };
  }
}
