/**
 * The generation loop: prefill once, then one `step` per new token for the
 * rows that are still running. Each row ends on its own, either by choosing a
 * stop id (not kept in its tokens) or by reaching max_new_tokens.
 *
 *   const results = await generate(model, [[1, 2, 3], [4, 5]], { maxNewTokens: 64, stopIds: [7] });
 *   // results[b] = { tokens, stoppedBy, hitMaxNewTokens }
 */
import { ChatsftError } from '../errors.js';
import { createRng, type Rng } from './rng.js';
import { sampleToken, validateSampling, type SamplingParams } from './sampling.js';
import type { GenerateOptions, RowResult, StepModel } from './types.js';

type Awaitable<T> = T | Promise<T>;

/**
 * A StepModel whose methods may also be async (a runtime that computes
 * logits off-thread). `generate` accepts both.
 */
export interface AsyncStepModel {
  readonly vocabSize: number;
  start(prompts: readonly (readonly number[])[], limits: { maxNewTokens: number }): Awaitable<Float32Array>;
  step(rows: readonly number[], tokens: readonly number[]): Awaitable<Float32Array>;
  dispose(): void;
}

function checkPrompts(prompts: readonly (readonly number[])[], vocabSize: number): void {
  if (prompts.length === 0) throw new ChatsftError('USAGE', 'generate needs at least one prompt');
  prompts.forEach((p, b) => {
    if (p.length === 0) throw new ChatsftError('USAGE', 'prompt is empty', `prompts[${b}]`);
    p.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
        throw new ChatsftError('USAGE', `token id ${id} is outside the vocabulary [0, ${vocabSize})`, `prompts[${b}][${i}]`);
      }
    });
  });
}

function checkLogits(logits: Float32Array, rows: number, vocabSize: number, call: string): void {
  if (logits.length !== rows * vocabSize) {
    throw new ChatsftError(
      'ENGINE_ERROR',
      `${call} returned ${logits.length} logits, expected ${rows} rows x ${vocabSize} vocab = ${rows * vocabSize}`,
    );
  }
}

function rowRngs(seed: GenerateOptions['seed'], batch: number): Rng[] {
  if (Array.isArray(seed)) {
    if (seed.length !== batch) {
      throw new ChatsftError('USAGE', `seed has ${seed.length} entries for ${batch} prompts`);
    }
    return seed.map((s: number) => createRng(s));
  }
  const base = typeof seed === 'number' ? seed : 0;
  return Array.from({ length: batch }, (_, b) => createRng(base, b));
}

/**
 * Generates for every prompt; returns one result per prompt, in order.
 * Always disposes the model, also when it throws.
 */
export async function generate(
  model: StepModel | AsyncStepModel,
  prompts: readonly (readonly number[])[],
  options: GenerateOptions,
): Promise<RowResult[]> {
  try {
    return await run(model, prompts, options);
  } finally {
    model.dispose();
  }
}

async function run(
  model: StepModel | AsyncStepModel,
  prompts: readonly (readonly number[])[],
  options: GenerateOptions,
): Promise<RowResult[]> {
  const V = model.vocabSize;
  const { maxNewTokens } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
    throw new ChatsftError('USAGE', `max_new_tokens must be an integer >= 0, got ${maxNewTokens}`);
  }
  const params: SamplingParams = {
    temperature: options.temperature ?? 0,
    topK: options.topK ?? 0,
    topP: options.topP ?? 1,
  };
  validateSampling(params);
  checkPrompts(prompts, V);
  const stopIds = new Set(options.stopIds);
  const rngs = rowRngs(options.seed, prompts.length);
  const results: RowResult[] = prompts.map(() => ({ tokens: [], stoppedBy: null, hitMaxNewTokens: false }));
  if (maxNewTokens === 0) {
    for (const r of results) r.hitMaxNewTokens = true;
    return results;
  }

  let active = prompts.map((_, b) => b); // ascending batch indices
  let logits = await model.start(prompts, { maxNewTokens });
  checkLogits(logits, active.length, V, 'start');

  for (;;) {
    const nextRows: number[] = [];
    const nextTokens: number[] = [];
    for (let i = 0; i < active.length; i++) {
      const b = active[i] as number;
      const result = results[b] as RowResult;
      const u = (rngs[b] as Rng).next(); // one draw per row per step, used or not
      const token = sampleToken(logits.subarray(i * V, (i + 1) * V), params, u);
      if (stopIds.has(token)) {
        result.stoppedBy = token;
        continue;
      }
      result.tokens.push(token);
      options.onToken?.({ row: b, token, index: result.tokens.length - 1 });
      if (result.tokens.length >= maxNewTokens) {
        result.hitMaxNewTokens = true;
        continue;
      }
      nextRows.push(b);
      nextTokens.push(token);
    }
    if (nextRows.length === 0) return results;
    active = nextRows;
    logits = await model.step(nextRows, nextTokens);
    checkLogits(logits, nextRows.length, V, 'step');
  }
}
