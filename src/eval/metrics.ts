/**
 * Stop-rate metrics (SPEC §8) from per-example generation results. Pure
 * functions: the eval command generates, these count.
 *
 * A generation either stopped (emitted a stop id) or ran away. A runaway that
 * hit max_new_tokens is classified by what it was doing: if its tokens
 * contain a turn header (e.g. the ids of `<|im_start|>`, or of
 * `<|im_start|>user`), the model finished its answer but did not know how to
 * close the turn and went on to write the next one (the signature of a model
 * whose EOT was masked); otherwise it ran on inside text.
 */
import { ChatsftError } from '../errors.js';

export interface GenerationOutcome {
  /** Generated ids, without the stop id. */
  tokens: readonly number[];
  stoppedBy: number | null;
  hitMaxNewTokens: boolean;
  /** Token count of the reference assistant answer (without its EOT), if known. */
  referenceTokens?: number;
}

export type Ending = 'stopped' | 'runaway_new_turn' | 'runaway_text' | 'ended_other';

export interface StopRateMetrics {
  examples: number;
  max_new_tokens: number;
  stopped: number;
  /** stopped / examples. */
  stop_rate: number;
  /** Mean count of generated ids (stop id excluded). */
  mean_new_tokens: number;
  /** Nearest-rank 95th percentile of generated ids. */
  p95_new_tokens: number;
  /** Mean reference answer length in tokens; null when no example has one. */
  reference_mean_tokens: number | null;
  /** Generations that hit max_new_tokens, split by how they ran on. */
  runaways: { total: number; new_turn_header: number; inside_text: number };
  /** Ended neither by a stop id nor by the limit (e.g. an external runtime hit its context). */
  ended_other: number;
  /** Count per stop id that ended a generation (keys are ids as strings, JSON-friendly). */
  stopped_by: Record<string, number>;
}

/** True when `needle` occurs as a contiguous run in `haystack`. */
export function containsSequence(haystack: readonly number[], needle: readonly number[]): boolean {
  if (needle.length === 0) return false;
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** How one generation ended; `headers` are the turn-header id sequences. */
export function classifyEnding(outcome: GenerationOutcome, headers: readonly (readonly number[])[]): Ending {
  if (outcome.stoppedBy !== null) return 'stopped';
  if (!outcome.hitMaxNewTokens) return 'ended_other';
  return headers.some((h) => containsSequence(outcome.tokens, h)) ? 'runaway_new_turn' : 'runaway_text';
}

/** Nearest-rank percentile (q in (0, 1]) of a non-empty list. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new RangeError('percentile of an empty list');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1] as number;
}

export interface StopRateOptions {
  maxNewTokens: number;
  /** Id sequences that open a new turn, e.g. [[imStartId]] for ChatML. */
  turnHeaders: readonly (readonly number[])[];
}

export function stopRateMetrics(outcomes: readonly GenerationOutcome[], options: StopRateOptions): StopRateMetrics {
  if (outcomes.length === 0) {
    throw new ChatsftError('DATA_INVALID', 'no held-out conversation ends with an assistant turn: nothing to evaluate');
  }
  const lengths = outcomes.map((o) => o.tokens.length);
  const refs = outcomes.flatMap((o) => (o.referenceTokens === undefined ? [] : [o.referenceTokens]));
  const stoppedBy: Record<string, number> = {};
  const runaways = { total: 0, new_turn_header: 0, inside_text: 0 };
  let stopped = 0;
  let endedOther = 0;
  for (const o of outcomes) {
    switch (classifyEnding(o, options.turnHeaders)) {
      case 'stopped': {
        stopped++;
        const key = String(o.stoppedBy);
        stoppedBy[key] = (stoppedBy[key] ?? 0) + 1;
        break;
      }
      case 'runaway_new_turn':
        runaways.total++;
        runaways.new_turn_header++;
        break;
      case 'runaway_text':
        runaways.total++;
        runaways.inside_text++;
        break;
      case 'ended_other':
        endedOther++;
        break;
    }
  }
  const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    examples: outcomes.length,
    max_new_tokens: options.maxNewTokens,
    stopped,
    stop_rate: stopped / outcomes.length,
    mean_new_tokens: mean(lengths),
    p95_new_tokens: percentile(lengths, 0.95),
    reference_mean_tokens: refs.length > 0 ? mean(refs) : null,
    runaways,
    ended_other: endedOther,
    stopped_by: stoppedBy,
  };
}
