/**
 * A StepModel over any "full forward" function: it keeps each row's ids and
 * recomputes the whole sequence on every step. Quadratic, so it serves as
 * the reference a KV-cache StepModel must agree with (tests), and as a
 * fallback for engines without a cache. Finished rows are simply left out of
 * later forward calls.
 */
import { ChatsftError } from '../errors.js';
import type { StepModel } from './types.js';

/**
 * `forwardLast(seqs)` returns the logits at the last position of each
 * sequence, row-major `[seqs.length, vocabSize]`.
 */
export function noCacheStepModel(
  vocabSize: number,
  forwardLast: (seqs: readonly (readonly number[])[]) => Float32Array,
  dispose: () => void = () => {},
): StepModel {
  let seqs: number[][] = [];
  return {
    vocabSize,
    start(prompts) {
      seqs = prompts.map((p) => [...p]);
      return forwardLast(seqs);
    },
    step(rows, tokens) {
      const batch = rows.map((b, i) => {
        const seq = seqs[b];
        if (seq === undefined) throw new ChatsftError('ENGINE_ERROR', `step: row ${b} was not started`);
        seq.push(tokens[i] as number);
        return seq;
      });
      return forwardLast(batch);
    },
    dispose,
  };
}
