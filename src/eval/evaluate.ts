/**
 * Stop-rate evaluation (SPEC §8), independent of the runtime that generates:
 * held-out conversations → prompts (everything before the last assistant
 * turn + the generation prompt) → a batch generator → stop-rate metrics,
 * plus the mean supervised cross-entropy of the conversations as prepared.
 *
 *   const report = await evaluateModel({ setup, data: 'heldout.jsonl', model, maxNewTokens: 64 });
 *   report.stop_rate; report.loss;
 *
 * The default generator is the embedded engine (KV cache, greedy); a GGUF
 * path passes `generateBatch` backed by llama.cpp, whose per-row result has
 * the same shape ({tokens, stoppedBy, hitMaxNewTokens}).
 */
import { existsSync } from 'node:fs';
import { ChatsftError } from '../errors.js';
import type { Row } from '../batch/types.js';
import { readConversations, type Message } from '../data/conversations.js';
// Types only: this module loads the engine (TensorFlow.js) on demand, when it
// is given an engine model, so the llama.cpp path and the library root never load it.
import type { LlamaModel } from '../engine/index.js';
import type { RowResult } from '../generate/types.js';
import type { EncodeOptions } from '../labels/encode.js';
import { prepareRows } from '../prepare/prepare.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { batches } from '../batch/collate.js';
import { classifyEnding, stopRateMetrics, type Ending, type StopRateMetrics } from './metrics.js';
import { chatRuntime, encodeText, promptIds, type ChatRuntime } from './runtime.js';

/** Generates for a batch of prompt ids; one result per prompt, in order. */
export type GenerateBatch = (prompts: number[][], opts: { maxNewTokens: number; stopIds: number[] }) => Promise<RowResult[]>;

/** One held-out conversation turned into a generation prompt. */
export interface EvalPrompt {
  /** 1-based line of the data file. */
  line: number;
  messages: Message[];
  ids: number[];
  /** Token count of the reference answer (the held-out assistant message, EOT excluded). */
  referenceTokens: number;
}

export interface EvalRow {
  line: number;
  promptTokens: number;
  referenceTokens: number;
  tokens: number[];
  stoppedBy: number | null;
  hitMaxNewTokens: boolean;
  ending: Ending;
}

export interface EvalReport {
  /** Conversations evaluated by generation (null with lossOnly). */
  examples: number | null;
  /** Mean cross-entropy over supervised tokens of the prepared conversations (null without a model). */
  loss: number | null;
  loss_examples: number;
  loss_tokens: number;
  max_new_tokens: number;
  stop_rate: number | null;
  mean_new_tokens: number | null;
  p95_new_tokens: number | null;
  reference_mean_tokens: number | null;
  runaways: StopRateMetrics['runaways'] | null;
  stopped_by: Record<string, number> | null;
  stop_ids: number[];
  stop_id_sources: ChatRuntime['stopSources'];
  turn_headers: number[][];
  /** Conversations skipped because they do not end with an assistant turn, or fail to parse. */
  skipped: number;
  seconds: { loss: number; generation: number };
}

export interface EvaluateOptions {
  setup: TokenizerSetup;
  /** Held-out conversations (JSONL). */
  data: string;
  /** The engine model: needed for the loss and for the default generator. */
  model?: LlamaModel;
  generateBatch?: GenerateBatch;
  lossOnly?: boolean;
  maxNewTokens: number;
  /** Prompts per generation batch (default 16). */
  batchSize?: number;
  /** Overrides the stop ids found from the model folder. */
  stopIds?: number[];
  encode?: EncodeOptions;
  /** Called after each generation batch. */
  onProgress?: (done: number, total: number) => void;
  /** Cap on how many conversations to evaluate (first N usable ones). */
  limit?: number;
}

/** Prompts of every conversation whose last message is an assistant turn. */
export async function evalPrompts(setup: TokenizerSetup, data: string, limit?: number): Promise<{ prompts: EvalPrompt[]; skipped: number }> {
  const prompts: EvalPrompt[] = [];
  let skipped = 0;
  for await (const parsed of readConversations(data)) {
    if (parsed.ok === 'blank') continue;
    if (limit !== undefined && prompts.length >= limit) break;
    const msgs = parsed.ok === true ? parsed.conversation.messages : [];
    const last = msgs[msgs.length - 1];
    if (parsed.ok !== true || last === undefined || last.role !== 'assistant' || msgs.length < 2) {
      skipped++;
      continue;
    }
    const messages = msgs.slice(0, -1);
    const reference = last.content === '' ? [] : (await setup.tokenizer.encode(last.content, null, { addSpecialTokens: false })).getIds();
    prompts.push({ line: parsed.line, messages, ids: await promptIds(setup, messages), referenceTokens: reference.length });
  }
  return { prompts, skipped };
}

/** Mean supervised cross-entropy of rows, in batches (no gradients). */
export async function meanLoss(model: LlamaModel, rows: Row[], setup: TokenizerSetup, batchSize = 16): Promise<{ loss: number; tokens: number }> {
  const { evalLoss } = await import('../engine/index.js');
  let sum = 0;
  let count = 0;
  for (const b of batches(rows, batchSize, setup.padId, setup.paddingSide)) {
    const r = evalLoss(model, b);
    sum += r.sum;
    count += r.count;
  }
  if (count === 0) throw new ChatsftError('DATA_INVALID', 'no supervised tokens in the evaluation data');
  return { loss: sum / count, tokens: count };
}

/** The embedded engine as a GenerateBatch: KV cache, greedy unless sampling options are given. */
export function engineGenerateBatch(model: LlamaModel, sampling: { temperature?: number; topK?: number; topP?: number; seed?: number } = {}): GenerateBatch {
  return async (prompts, opts) => {
    const { engineStepModel, generate } = await import('../generate/index.js');
    return generate(engineStepModel(model), prompts, { ...sampling, ...opts });
  };
}

export async function evaluateModel(opts: EvaluateOptions): Promise<{ report: EvalReport; rows: EvalRow[] }> {
  const { setup, model } = opts;
  if (!existsSync(opts.data)) throw new ChatsftError('FILE_MISSING', 'data file not found', opts.data);
  const runtime = await chatRuntime(setup);
  const stopIds = opts.stopIds ?? runtime.stopIds;

  // Loss over the conversations as `prepare` would label them.
  const t0 = performance.now();
  let loss: number | null = null;
  let lossTokens = 0;
  let lossExamples = 0;
  if (model) {
    const { rows } = await prepareRows(setup, opts.data, opts.encode ?? {});
    lossExamples = rows.length;
    if (rows.length > 0) ({ loss, tokens: lossTokens } = await meanLoss(model, rows, setup, opts.batchSize ?? 16));
  }
  const lossSeconds = (performance.now() - t0) / 1000;

  const base: EvalReport = {
    examples: null,
    loss,
    loss_examples: lossExamples,
    loss_tokens: lossTokens,
    max_new_tokens: opts.maxNewTokens,
    stop_rate: null,
    mean_new_tokens: null,
    p95_new_tokens: null,
    reference_mean_tokens: null,
    runaways: null,
    stopped_by: null,
    stop_ids: stopIds,
    stop_id_sources: runtime.stopSources,
    turn_headers: runtime.turnHeaders,
    skipped: 0,
    seconds: { loss: lossSeconds, generation: 0 },
  };
  if (opts.lossOnly) return { report: base, rows: [] };

  const generateBatch = opts.generateBatch ?? (model ? engineGenerateBatch(model) : undefined);
  if (!generateBatch) throw new ChatsftError('USAGE', 'evaluateModel needs a model or a generateBatch function');
  const { prompts, skipped } = await evalPrompts(setup, opts.data, opts.limit);
  if (prompts.length === 0) {
    throw new ChatsftError('DATA_INVALID', 'no conversation ends with an assistant turn: nothing to evaluate', opts.data);
  }

  // Similar lengths share a batch, so left padding wastes little.
  const t1 = performance.now();
  const order = prompts.map((_, i) => i).sort((a, b) => (prompts[a] as EvalPrompt).ids.length - (prompts[b] as EvalPrompt).ids.length);
  const results: RowResult[] = new Array<RowResult>(prompts.length);
  const batchSize = opts.batchSize ?? 16;
  opts.onProgress?.(0, order.length);
  for (let i = 0; i < order.length; i += batchSize) {
    const idx = order.slice(i, i + batchSize);
    const out = await generateBatch(
      idx.map((j) => (prompts[j] as EvalPrompt).ids),
      { maxNewTokens: opts.maxNewTokens, stopIds },
    );
    idx.forEach((j, k) => (results[j] = out[k] as RowResult));
    opts.onProgress?.(Math.min(i + batchSize, order.length), order.length);
  }
  const generationSeconds = (performance.now() - t1) / 1000;

  const outcomes = prompts.map((p, i) => ({ ...(results[i] as RowResult), referenceTokens: p.referenceTokens }));
  const m = stopRateMetrics(outcomes, { maxNewTokens: opts.maxNewTokens, turnHeaders: runtime.turnHeaders });
  const rows: EvalRow[] = prompts.map((p, i) => {
    const r = results[i] as RowResult;
    return {
      line: p.line,
      promptTokens: p.ids.length,
      referenceTokens: p.referenceTokens,
      tokens: r.tokens,
      stoppedBy: r.stoppedBy,
      hitMaxNewTokens: r.hitMaxNewTokens,
      ending: classifyEnding(r, runtime.turnHeaders),
    };
  });
  return {
    report: {
      ...base,
      examples: m.examples,
      stop_rate: m.stop_rate,
      mean_new_tokens: m.mean_new_tokens,
      p95_new_tokens: m.p95_new_tokens,
      reference_mean_tokens: m.reference_mean_tokens,
      runaways: m.runaways,
      stopped_by: m.stopped_by,
      skipped,
      seconds: { loss: lossSeconds, generation: generationSeconds },
    },
    rows,
  };
}

/** Decoded text of generated ids (special tokens kept, so a runaway's `<|im_start|>` shows). */
export async function decodeIds(setup: TokenizerSetup, ids: readonly number[]): Promise<string> {
  return ids.length === 0 ? '' : setup.tokenizer.decode([...ids], false);
}

export { encodeText };
