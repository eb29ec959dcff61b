/** Kernel time of a tf.profile run, aggregated by kernel name and input shapes, biggest first. */
import type { tf } from '../src/engine/index.js';

export interface KernelRow {
  key: string;
  ms: number;
  n: number;
}

export function aggregateKernels(prof: Awaited<ReturnType<typeof tf.profile>>): { rows: KernelRow[]; totalMs: number; kernels: number } {
  const agg = new Map<string, KernelRow>();
  for (const k of prof.kernels) {
    const key = `${k.name} ${JSON.stringify(k.inputShapes)}`;
    const a = agg.get(key) ?? { key, ms: 0, n: 0 };
    a.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    a.n += 1;
    agg.set(key, a);
  }
  const rows = [...agg.values()].sort((x, y) => y.ms - x.ms);
  return { rows, totalMs: rows.reduce((s, a) => s + a.ms, 0), kernels: prof.kernels.length };
}
