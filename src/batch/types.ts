/**
 * Plain data passed between the pipeline and the engine.
 *
 * Labels follow Hugging Face causal-LM semantics: `labels[i]` is the target
 * id at position i (or -100); the model shifts internally, so logits at
 * position i are scored against `labels[i + 1]`.
 */

import type { LabelledExample } from '../labels/types.js';

export { IGNORE_INDEX } from '../labels/types.js';

/** What packing and collating need of a labelled example (labels/types.ts): ids, labels and its input line. */
export type Example = Pick<LabelledExample, 'inputIds' | 'labels'> & {
  /** 1-based line of the input file this example came from. */
  source: number;
};

/** A row as stored in shards: one example, or several packed ones. */
export interface Row {
  inputIds: number[];
  labels: number[];
  /** Present on packed rows: restarts at 0 for each packed example. */
  positionIds?: number[];
  /** Present on packed rows: length of each packed example, in order. */
  seqLengths?: number[];
  /** 1-based input line of an unpacked row. */
  source?: number;
  /** 1-based input lines of the examples of a packed row. */
  sources?: number[];
}

/**
 * A collated batch, flat row-major arrays of shape [batchSize, seqLen].
 * `segmentIds` tells the engine which tokens may attend to which: a token
 * attends only to earlier tokens of the same non-zero segment (packed rows
 * number their examples 1..k; padding is 0). Labels are already -100 on
 * padding and on the first token of every segment.
 */
export interface Batch {
  batchSize: number;
  seqLen: number;
  inputIds: Int32Array; // [B, T]
  labels: Int32Array; // [B, T]
  attentionMask: Uint8Array; // [B, T] 1 = real token
  positionIds: Int32Array; // [B, T]
  segmentIds: Int32Array; // [B, T]
}
