/**
 * Choosing the next token from one row of logits: greedy argmax, or sampling
 * with temperature, top-k and top-p. Pure functions over a `[vocab]` view.
 */
import { ChatsftError } from '../errors.js';

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = no top-k filter. */
  topK: number;
  /** 1 = no top-p filter. */
  topP: number;
}

/** Index of the largest finite logit; ties go to the lowest index. */
export function argmax(logits: ArrayLike<number>): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i] as number;
    // NaN compares false, so it never wins.
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  if (best < 0) throw new ChatsftError('ENGINE_ERROR', 'logits contain no finite value (all NaN or -Infinity)');
  return best;
}

export function validateSampling(p: SamplingParams): void {
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) {
    throw new ChatsftError('USAGE', `temperature must be a finite number >= 0, got ${p.temperature}`);
  }
  if (!Number.isInteger(p.topK) || p.topK < 0) {
    throw new ChatsftError('USAGE', `top_k must be an integer >= 0, got ${p.topK}`);
  }
  if (!(p.topP > 0 && p.topP <= 1)) {
    throw new ChatsftError('USAGE', `top_p must be in (0, 1], got ${p.topP}`);
  }
}

/**
 * Picks a token. `u` is one uniform draw in [0, 1), taken by the caller so
 * that each row consumes exactly one draw per step whatever the filters do.
 */
export function sampleToken(logits: ArrayLike<number>, p: SamplingParams, u: number): number {
  if (p.temperature === 0) return argmax(logits);
  const n = logits.length;
  // Candidates in descending logit order; only sorted when a filter needs it.
  let ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = logits[i] as number;
    if (v > -Infinity) ids.push(i); // drops NaN and -Infinity
  }
  if (ids.length === 0) throw new ChatsftError('ENGINE_ERROR', 'logits contain no finite value (all NaN or -Infinity)');
  const filtered = (p.topK > 0 && p.topK < ids.length) || p.topP < 1;
  if (filtered) {
    ids.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
    if (p.topK > 0 && p.topK < ids.length) ids = ids.slice(0, p.topK);
  }
  // Softmax over the candidates, shifted by the max for stability.
  let max = -Infinity;
  for (const i of ids) max = Math.max(max, logits[i] as number);
  const weights = new Float64Array(ids.length);
  let total = 0;
  for (let j = 0; j < ids.length; j++) {
    const w = Math.exp(((logits[ids[j] as number] as number) - max) / p.temperature);
    weights[j] = w;
    total += w;
  }
  let count = ids.length;
  if (p.topP < 1) {
    // ids are sorted, so the nucleus is a prefix; always keep the first.
    let cum = 0;
    for (let j = 0; j < ids.length; j++) {
      cum += (weights[j] as number) / total;
      if (cum >= p.topP) {
        count = j + 1;
        break;
      }
    }
    total = 0;
    for (let j = 0; j < count; j++) total += weights[j] as number;
  }
  let target = u * total;
  for (let j = 0; j < count; j++) {
    target -= weights[j] as number;
    if (target < 0) return ids[j] as number;
  }
  // Rounding can leave a sliver of mass: it belongs to the last candidate.
  return ids[count - 1] as number;
}
