/**
 * The stop-rate summary a training run records at each evaluation (SPEC §8,
 * last paragraph), as a plain function over generated token sequences.
 *
 * It takes only ids: what each prompt generated, the stop ids and the
 * turn-header id sequences (see turn_header.ts). Whoever generates (the
 * embedded engine in-process, or the PyTorch worker of `--engine torch`,
 * which sends its generated ids back to TypeScript) calls this one function,
 * so both engines count the same way.
 *
 *   const s = summarizeGenerations([[5, 9, 2], [5, 5, 5, 5]], { stopIds: [2], turnHeaders: [[1]], maxNewTokens: 4 });
 *   // { examples: 2, stop_rate: 0.5, mean_new_tokens: 3, runaway_new_turn: 0 }
 *
 * The signature is a contract with the torch worker; extend the result, do
 * not change the arguments.
 */
import { classifyEnding, type GenerationOutcome } from './metrics.js';

export interface GenerationSummaryOptions {
  /** Ids that end a generation (the runtime's stop ids). */
  stopIds: readonly number[];
  /** Id sequences that open a new turn (turn_header.ts gives the one definition). */
  turnHeaders: readonly (readonly number[])[];
  /** The generation budget each sequence had. */
  maxNewTokens: number;
}

/** One evaluation's stop-rate figures, as written into metrics.jsonl. */
export interface StopRateSummary {
  /** Prompts generated from. */
  examples: number;
  /** Fraction of generations that ended by emitting a stop id. */
  stop_rate: number;
  /** Mean count of generated ids, stop id excluded. */
  mean_new_tokens: number;
  /**
   * Fraction of generations that ran to max_new_tokens after writing a turn
   * header: the model finished its answer but did not close the turn and went
   * on to write the next one (the signature of a masked EOT).
   */
  runaway_new_turn: number;
}

/**
 * A generated sequence → how it ended. The sequence is what the runtime
 * emitted, in order; it ends at the first stop id (anything after it is
 * ignored, as a runtime would have stopped there).
 */
export function outcomeOfSequence(sequence: readonly number[], stopIds: ReadonlySet<number>, maxNewTokens: number): GenerationOutcome {
  const at = sequence.findIndex((id) => stopIds.has(id));
  if (at >= 0) return { tokens: sequence.slice(0, at), stoppedBy: sequence[at] as number, hitMaxNewTokens: false };
  return { tokens: [...sequence], stoppedBy: null, hitMaxNewTokens: sequence.length >= maxNewTokens };
}

export function summarizeGenerations(sequences: readonly (readonly number[])[], o: GenerationSummaryOptions): StopRateSummary {
  const n = sequences.length;
  if (n === 0) return { examples: 0, stop_rate: NaN, mean_new_tokens: NaN, runaway_new_turn: NaN };
  const stops = new Set(o.stopIds);
  let stopped = 0;
  let newTurn = 0;
  let tokens = 0;
  for (const seq of sequences) {
    const outcome = outcomeOfSequence(seq, stops, o.maxNewTokens);
    tokens += outcome.tokens.length;
    const ending = classifyEnding(outcome, o.turnHeaders);
    if (ending === 'stopped') stopped++;
    else if (ending === 'runaway_new_turn') newTurn++;
  }
  return { examples: n, stop_rate: stopped / n, mean_new_tokens: tokens / n, runaway_new_turn: newTurn / n };
}

/**
 * The one-line warning of a run that started from a model that stopped and
 * ends stopping much less often (the "continued training" case of the demo:
 * the new data's labels taught it to run on). Null when there is nothing to say.
 */
export function stopRateDropWarning(start: number | null | undefined, end: number | null | undefined): string | null {
  if (start === null || start === undefined || end === null || end === undefined) return null;
  if (!Number.isFinite(start) || !Number.isFinite(end)) return null;
  // "Stopped": at least half of the prompts; "much lower": lost a third of it and 20 points at least.
  if (start < 0.5 || end > start * (2 / 3) || start - end < 0.2) return null;
  const pct = (x: number): string => `${Math.round(x * 100)}%`;
  return `warning: the model stopped on ${pct(start)} of held-out prompts before training and on ${pct(end)} after: check that the training data supervise the end-of-turn token (chatsft doctor)`;
}
