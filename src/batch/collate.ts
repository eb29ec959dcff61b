/**
 * Collating rows into batches: padding on either side with identical
 * labels, attention masks, position ids and segment ids. Labels are carried
 * from the rows and padding is -100 by position, never by comparing ids to
 * the pad id, so pad == EOS is harmless here.
 */
import { IGNORE_INDEX, type Batch, type Row } from './types.js';

export interface CollateOptions {
  padId: number;
  paddingSide: 'left' | 'right';
  /** Pad every row to this length (default: the longest row). */
  seqLen?: number;
  /** Round the padded length up to a multiple of this (e.g. 8). */
  padToMultipleOf?: number;
}

/** Segment lengths of a row: its packed examples, or one segment. */
export function rowSegments(row: Row): number[] {
  return row.seqLengths ?? [row.inputIds.length];
}

export function collate(rows: Row[], opts: CollateOptions): Batch {
  const longest = rows.reduce((m, r) => Math.max(m, r.inputIds.length), 0);
  let seqLen = opts.seqLen ?? longest;
  if (opts.padToMultipleOf && seqLen % opts.padToMultipleOf !== 0) seqLen += opts.padToMultipleOf - (seqLen % opts.padToMultipleOf);
  if (seqLen < longest) throw new RangeError(`collate: seqLen ${seqLen} < longest row ${longest}`);
  const B = rows.length;
  const inputIds = new Int32Array(B * seqLen).fill(opts.padId);
  const labels = new Int32Array(B * seqLen).fill(IGNORE_INDEX);
  const attentionMask = new Uint8Array(B * seqLen);
  const positionIds = new Int32Array(B * seqLen);
  const segmentIds = new Int32Array(B * seqLen);
  rows.forEach((row, b) => {
    const n = row.inputIds.length;
    const offset = b * seqLen + (opts.paddingSide === 'left' ? seqLen - n : 0);
    let i = 0;
    rowSegments(row).forEach((len, s) => {
      for (let p = 0; p < len; p++, i++) {
        const at = offset + i;
        inputIds[at] = row.inputIds[i] as number;
        // The first token of a segment is never a target: its logits would
        // come from the previous example (packed) or from padding (left).
        labels[at] = p === 0 ? IGNORE_INDEX : (row.labels[i] as number);
        attentionMask[at] = 1;
        positionIds[at] = p;
        segmentIds[at] = s + 1;
      }
    });
  });
  return { batchSize: B, seqLen, inputIds, labels, attentionMask, positionIds, segmentIds };
}

/** Number of supervised targets in a batch (labels shifted as the model scores them). */
export function countTargets(batch: Batch): number {
  let n = 0;
  for (let b = 0; b < batch.batchSize; b++) {
    for (let t = 1; t < batch.seqLen; t++) if ((batch.labels[b * batch.seqLen + t] as number) !== IGNORE_INDEX) n++;
  }
  return n;
}

/**
 * Labels as transformers' DataCollatorForLanguageModeling(mlm=False) makes
 * them: a copy of input_ids with every position equal to the pad id set to
 * -100. With pad == EOS this erases every real EOS: the failure of SPEC §1.
 * `base` = 'input_ids' trains on everything (plain LM collator);
 * 'labels' keeps the given assistant-only labels first (completion-only
 * collators subclass the LM collator and mask the prompt afterwards).
 */
export function hfLmCollatorLabels(batch: Batch, padId: number, base: 'input_ids' | 'labels'): Int32Array {
  const out = base === 'labels' ? Int32Array.from(batch.labels) : Int32Array.from(batch.inputIds);
  for (let i = 0; i < out.length; i++) if (batch.inputIds[i] === padId) out[i] = IGNORE_INDEX;
  return out;
}

/** Rows in order, `batchSize` at a time, collated (eval loss; no shuffling). */
export function batches(rows: Row[], batchSize: number, padId: number, paddingSide: 'left' | 'right'): Batch[] {
  const out: Batch[] = [];
  for (let i = 0; i < rows.length; i += batchSize) out.push(collate(rows.slice(i, i + batchSize), { padId, paddingSide }));
  return out;
}
