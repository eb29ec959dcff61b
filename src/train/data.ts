/**
 * Data order: each epoch is a permutation of the rows drawn from a PRNG
 * seeded by (seed, epoch), and a step consumes `gradAccum` micro-batches of
 * `batchSize` rows. The position in the data is therefore just the global
 * micro-batch index, which is what checkpoints store.
 */
import { collate } from '../batch/collate.js';
import { IGNORE_INDEX, type Batch, type Row } from '../batch/types.js';
import { ChatsftError } from '../errors.js';
import { Rng, type Schedule } from '../engine/index.js';
import type { TrainHyperParams } from './types.js';

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

/** The supervised EOT count of the training rows; none is an error unless allowed (the model would never learn to stop). */
export function requireSupervisedEot(rows: Row[], eotIds: number[], allowNoEot: boolean | undefined): number {
  if (rows.length === 0) throw new ChatsftError('DATA_INVALID', 'no training rows');
  const supervisedEot = countSupervisedEot(rows, eotIds);
  if (supervisedEot === 0 && !allowNoEot) {
    throw new ChatsftError(
      'NO_EOT_SUPERVISED',
      `the training rows supervise no end-of-turn token (ids ${eotIds.join(', ') || 'none given'}): the model would never learn to stop. Fix the labels or set allow_no_eot: true`,
    );
  }
  return supervisedEot;
}

/** The LR schedule over optimiser steps of `order`'s micro-batches (both engines; torch's order has batch × nproc rows). */
export function scheduleFor(order: DataOrder, hp: TrainHyperParams): Schedule {
  const stepsPerEpoch = Math.ceil(order.microPerEpoch / hp.gradAccum);
  const totalSteps = hp.maxSteps ?? Math.max(1, Math.ceil((hp.epochs ?? 1) * stepsPerEpoch));
  return { kind: hp.schedule, lr: hp.lr, warmupSteps: hp.warmupSteps, totalSteps };
}
