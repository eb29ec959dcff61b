/**
 * Data order: each epoch is a permutation of the rows drawn from a PRNG
 * seeded by (seed, epoch), and a step consumes `gradAccum` micro-batches of
 * `batchSize` rows. The position in the data is therefore just the global
 * micro-batch index, which is what checkpoints store.
 */
import { collate } from '../batch/collate.js';
import { IGNORE_INDEX, type Batch, type Row } from '../batch/types.js';
import { Rng } from '../engine/index.js';

export class DataOrder {
  readonly microPerEpoch: number;
  private cache = new Map<number, number[]>();

  constructor(
    private readonly rows: Row[],
    private readonly batchSize: number,
    private readonly seed: number,
  ) {
    this.microPerEpoch = Math.ceil(rows.length / batchSize);
  }

  private order(epoch: number): number[] {
    let o = this.cache.get(epoch);
    if (!o) {
      o = new Rng((this.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0).permutation(this.rows.length);
      this.cache.clear();
      this.cache.set(epoch, o);
    }
    return o;
  }

  /** Rows of global micro-batch `g`. */
  micro(g: number): Row[] {
    const epoch = Math.floor(g / this.microPerEpoch);
    const k = g % this.microPerEpoch;
    const o = this.order(epoch);
    return o.slice(k * this.batchSize, (k + 1) * this.batchSize).map((i) => this.rows[i]!);
  }

  epochOf(g: number): number {
    return g / this.microPerEpoch;
  }
}

export { batches } from '../batch/collate.js';

/** Supervised positions whose label is an EOT id (what "the model learns to stop" needs). */
export function countSupervisedEot(rows: Row[], eotIds: number[]): number {
  const eot = new Set(eotIds);
  let n = 0;
  for (const r of rows) {
    // Position 0 of a row (or of a packed segment) is never a target.
    const starts = new Set<number>();
    let at = 0;
    for (const len of r.seqLengths ?? [r.inputIds.length]) {
      starts.add(at);
      at += len;
    }
    r.labels.forEach((y, i) => {
      if (y !== IGNORE_INDEX && eot.has(y) && !starts.has(i)) n++;
    });
  }
  return n;
}

/** Real (non-padding) tokens of a batch. */
export function realTokens(b: Batch): number {
  let n = 0;
  for (let i = 0; i < b.attentionMask.length; i++) n += b.attentionMask[i]!;
  return n;
}
