/**
 * Packing (SPEC §4): best-fit-decreasing of examples into rows of at most
 * `maxLength` tokens. Each packed row carries position ids restarting at 0
 * per example and the examples' lengths, so attention never crosses
 * examples.
 */
import { IGNORE_INDEX, type Example, type Row } from './types.js';

/**
 * Smallest-fitting-bin lookup over remaining capacities 0..maxLength with a
 * segment tree of counts: O(log maxLength) per placement.
 */
class CapacityIndex {
  private readonly size: number;
  private readonly tree: Int32Array;
  private readonly bins: number[][];

  constructor(maxCapacity: number) {
    let size = 1;
    while (size < maxCapacity + 1) size *= 2;
    this.size = size;
    this.tree = new Int32Array(2 * size);
    this.bins = Array.from({ length: maxCapacity + 1 }, () => []);
  }

  add(capacity: number, bin: number): void {
    (this.bins[capacity] as number[]).push(bin);
    for (let i = capacity + this.size; i >= 1; i >>= 1) this.tree[i] = (this.tree[i] as number) + 1;
  }

  /** Remove and return a bin with the smallest capacity >= need, if any. */
  takeAtLeast(need: number): { bin: number; capacity: number } | undefined {
    const cap = this.firstAtLeast(1, 0, this.size - 1, need);
    if (cap < 0) return undefined;
    const bin = (this.bins[cap] as number[]).pop() as number;
    for (let i = cap + this.size; i >= 1; i >>= 1) this.tree[i] = (this.tree[i] as number) - 1;
    return { bin, capacity: cap };
  }

  private firstAtLeast(node: number, lo: number, hi: number, need: number): number {
    if (hi < need || (this.tree[node] as number) === 0) return -1;
    if (lo === hi) return lo;
    const mid = (lo + hi) >> 1;
    const left = this.firstAtLeast(2 * node, lo, mid, need);
    return left >= 0 ? left : this.firstAtLeast(2 * node + 1, mid + 1, hi, need);
  }
}

/**
 * Pack examples (each at most maxLength long) into rows. Deterministic: ties
 * in length keep input order, and rows list their examples in placement order.
 */
export function packExamples(examples: Example[], maxLength: number): Row[] {
  const order = examples
    .map((_, i) => i)
    .sort((a, b) => {
      const d = (examples[b] as Example).inputIds.length - (examples[a] as Example).inputIds.length;
      return d !== 0 ? d : a - b;
    });
  const bins: number[][] = [];
  const index = new CapacityIndex(maxLength);
  for (const i of order) {
    const len = (examples[i] as Example).inputIds.length;
    if (len > maxLength) throw new RangeError(`packExamples: example of ${len} tokens > max_length ${maxLength}`);
    const hit = index.takeAtLeast(len);
    if (hit) {
      (bins[hit.bin] as number[]).push(i);
      index.add(hit.capacity - len, hit.bin);
    } else {
      bins.push([i]);
      index.add(maxLength - len, bins.length - 1);
    }
  }
  return bins.map((members) => {
    const inputIds: number[] = [];
    const labels: number[] = [];
    const positionIds: number[] = [];
    const seqLengths: number[] = [];
    const sources: number[] = [];
    for (const i of members) {
      const ex = examples[i] as Example;
      ex.inputIds.forEach((id, p) => {
        inputIds.push(id);
        // As in transformers' DataCollatorWithFlattening: the first token of
        // each example is no target, so no loss crosses example boundaries.
        labels.push(p === 0 ? IGNORE_INDEX : (ex.labels[p] as number));
        positionIds.push(p);
      });
      seqLengths.push(ex.inputIds.length);
      sources.push(ex.source);
    }
    return { inputIds, labels, positionIds, seqLengths, sources };
  });
}
