/**
 * Stop rate during training on the torch engine (SPEC §8, issue 13 §1): the
 * worker generates greedily from held-out prompts and returns token ids;
 * the metrics come from the one training-time summary both engines use
 * (summarizeGenerations, src/eval/stop_rate.ts).
 */
import { summarizeGenerations } from '../eval/stop_rate.js';

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
  // The one summary both engines use (eval/stop_rate.ts), over the sequences as emitted.
  const s = summarizeGenerations(
    gens.map((g) => (g.stopped_by === null ? g.tokens : [...g.tokens, g.stopped_by])),
    { stopIds: se.stopIds, turnHeaders: se.turnHeaders, maxNewTokens: se.maxNewTokens },
  );
  return { stop_rate: s.stop_rate, mean_new_tokens: s.mean_new_tokens, runaway_new_turn: s.runaway_new_turn };
}
