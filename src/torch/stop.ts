/**
 * Stop rate during training on the torch engine (SPEC §8, issue 13 §1): the
 * worker generates greedily from held-out prompts and returns token ids;
 * the metrics come from the same pure function `chatsft eval` uses
 * (src/eval/metrics.ts). A thin adapter: once issue 13's shared
 * training-time stop-rate function lands, this calls it instead.
 */
import { stopRateMetrics, type GenerationOutcome } from '../eval/metrics.js';

export interface StopEval {
  /** Prompt ids (everything before the last assistant turn + the generation prompt). */
  prompts: number[][];
  stopIds: number[];
  maxNewTokens: number;
  /** Id sequences that open a new turn (a runaway that wrote one is `runaway_new_turn`). */
  turnHeaders: number[][];
}

/** What the worker sends per prompt. */
export interface WorkerGeneration {
  tokens: number[];
  stopped_by: number | null;
  hit_max: boolean;
}

export interface StopFields {
  stop_rate: number;
  mean_new_tokens: number;
  runaway_new_turn: number;
}

export function stopFields(gens: WorkerGeneration[], se: StopEval): StopFields {
  const outcomes: GenerationOutcome[] = gens.map((g) => ({ tokens: g.tokens, stoppedBy: g.stopped_by, hitMaxNewTokens: g.hit_max }));
  const m = stopRateMetrics(outcomes, { maxNewTokens: se.maxNewTokens, turnHeaders: se.turnHeaders });
  return { stop_rate: m.stop_rate, mean_new_tokens: m.mean_new_tokens, runaway_new_turn: m.runaways.new_turn_header };
}
