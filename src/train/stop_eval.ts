/**
 * The stop rate measured during training (SPEC §8): greedy generation from
 * held-out prompts with the model being trained, summarised by the one plain
 * function (eval/stop_rate.ts) that the torch engine's worker results go
 * through too.
 *
 *   const measure = engineStopRate(model, prompts, { stopIds, turnHeaders, maxNewTokens: 128 });
 *   const s = await measure();   // { examples, stop_rate, mean_new_tokens, runaway_new_turn }
 */
import { isChatsftError } from '../errors.js';
import type { LlamaModel } from '../engine/index.js';
import { summarizeGenerations, type GenerationSummaryOptions, type StopRateSummary } from '../eval/stop_rate.js';
import { engineStepModel, generate, type RowResult } from '../generate/index.js';

/** A generated row as the sequence a runtime emitted: its tokens, then the stop id when it stopped. */
export function sequenceOf(r: RowResult): number[] {
  return r.stoppedBy === null ? r.tokens : [...r.tokens, r.stoppedBy];
}

/**
 * A measurement over the embedded engine, `batchSize` prompts at a time
 * (prompts sorted by length so little left padding is wasted).
 */
export function engineStopRate(
  model: LlamaModel,
  prompts: readonly number[][],
  o: GenerationSummaryOptions & { batchSize?: number },
): () => Promise<StopRateSummary | null> {
  const sorted = [...prompts].sort((a, b) => a.length - b.length);
  const batch = o.batchSize ?? 16;
  return async () => {
    if (sorted.length === 0) return null;
    const sequences: number[][] = [];
    try {
      for (let i = 0; i < sorted.length; i += batch) {
        const out = await generate(engineStepModel(model), sorted.slice(i, i + batch), {
          maxNewTokens: o.maxNewTokens,
          stopIds: o.stopIds,
        });
        sequences.push(...out.map(sequenceOf));
      }
    } catch (e) {
      // Non-finite weights (a diverged run) give no logits to pick from: no stop rate; the
      // trainer's divergence check reports the run itself.
      if (isChatsftError(e) && e.code === 'ENGINE_ERROR' && /finite/.test(e.message)) return null;
      throw e;
    }
    return summarizeGenerations(sequences, o);
  };
}
