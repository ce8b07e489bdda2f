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

  constructor() {
    this.observer.observe({ entryTypes: ['gc'] });
  }

  /** Starts the window (again: a second call moves its start to now). */
  open(): void {
    this.profiler?.stop();
    this.openedAt = performance.now();
    this.usedAtOpen = v8.getHeapStatistics().used_heap_size;
    const Profiler = (v8 as unknown as { GCProfiler?: new () => { start(): void; stop(): { statistics: GcStatistic[] } } }).GCProfiler;
    this.profiler = Profiler === undefined ? undefined : new Profiler();
    this.profiler?.start();
  }

  close(records: number): GcReport {
    const closedAt = performance.now();
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
    return { wallMs, gcMs, gcShare: wallMs > 0 ? gcMs / wallMs : 0, collections: inside.length, allocatedBytes: this.profiler === undefined ? Number.NaN : allocated, heapUsedBytes: usedAtClose, records };
  }
}
