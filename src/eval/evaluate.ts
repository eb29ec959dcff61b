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
import { ChatsftError, isChatsftError } from '../errors.js';
import { certainlyOver } from '../data/limits.js';
import { checkKvCacheFits } from '../generate/limits.js';
import { dataReporter, dataSummary, totalDropped, type DataReport } from '../data/report.js';
import { specialMatcher, type SpecialMatcher } from '../tokenize/special.js';
import type { Row } from '../batch/types.js';
import { readConversations, type Message } from '../data/conversations.js';
// Types only: this module loads the engine (TensorFlow.js) on demand, when it
// is given an engine model, so the llama.cpp path and the library root never load it.
import type { LlamaModel } from '../engine/index.js';
import type { RowResult } from '../generate/types.js';
import type { EncodeOptions } from '../labels/encode.js';
import { prepareRows, reportOf } from '../prepare/prepare.js';
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
  /** What happened to each line for generation (null with lossOnly): reasons, first problems. */
  data_report: DataReport | null;
  /** The same for the loss, where lines are labelled as `prepare` labels them (null without a model). */
  loss_data_report: DataReport | null;
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
  /** The model's positions (default: the engine model's max_position_embeddings); prompts must leave room for maxNewTokens. */
  maxPositions?: number;
  /** Called for each line left out (file:line field: problem). */
  onIssue?: (message: string) => void;
}

export interface EvalPromptOptions {
  /** Cap on how many prompts to build (first N usable lines). */
  limit?: number;
  /** Keep conversations whose text contains special-token strings (as `prepare` does; default false). */
  allowSpecialTokensInContent?: boolean;
  /**
   * Longest prompt in tokens: max_position_embeddings − max_new_tokens.
   * Longer prompts are left out as `too_long` (checked on characters first,
   * so a huge line is never tokenized).
   */
  maxPromptTokens?: number;
  /** Called for each line left out (file:line field: problem). */
  onIssue?: (message: string) => void;
}

/** The special-token text in message content that `prepare` rejects (SPEC §3), as `[field, token]`. */
export function specialTokenIn(matcher: SpecialMatcher, messages: readonly Message[]): [string, string] | undefined {
  for (let i = 0; i < messages.length; i++) {
    const c = (messages[i] as { content?: unknown }).content;
    const found = typeof c === 'string' ? matcher.find(c) : undefined;
    if (found !== undefined) return [`messages[${i}].content`, found];
  }
  return undefined;
}

/**
 * Prompts of every conversation whose last message is an assistant turn,
 * read and checked as `prepare` reads them (one report, same reasons).
 */
export async function evalPrompts(
  setup: TokenizerSetup,
  data: string,
  options: number | EvalPromptOptions = {},
): Promise<{ prompts: EvalPrompt[]; skipped: number; report: DataReport }> {
  const o: EvalPromptOptions = typeof options === 'number' ? { limit: options } : options;
  const rep = dataReporter(data, o.onIssue);
  const matcher = specialMatcher(setup.specialStrings);
  const prompts: EvalPrompt[] = [];
  for await (const parsed of readConversations(data)) {
    if (o.limit !== undefined && prompts.length >= o.limit) break;
    rep.seen(parsed.line);
    if (parsed.ok === 'blank') continue;
    if (parsed.ok === false) {
      rep.drop(parsed.line, parsed.reason ?? 'invalid_data', parsed.issue.field, parsed.issue.message);
      continue;
    }
    const msgs = parsed.conversation.messages;
    const last = msgs[msgs.length - 1];
    if (last === undefined || last.role !== 'assistant' || msgs.length < 2) {
      rep.drop(
        parsed.line,
        'no_final_assistant',
        'messages',
        'does not end with an assistant turn after a prompt; nothing to compare a generation with',
      );
      continue;
    }
    if (!o.allowSpecialTokensInContent) {
      const special = specialTokenIn(matcher, msgs);
      if (special) {
        rep.drop(
          parsed.line,
          'special_tokens_in_content',
          special[0],
          `contains the special token ${special[1]} (pass --allow-special-tokens-in-content to keep it)`,
        );
        continue;
      }
    }
    const messages = msgs.slice(0, -1);
    if (o.maxPromptTokens !== undefined) {
      const over = certainlyOver(setup.tokenizer, { messages }, o.maxPromptTokens);
      if (over) {
        rep.drop(
          parsed.line,
          'too_long',
          'messages',
          `${over.chars} characters of prompt cannot fit the ${o.maxPromptTokens} tokens left by max_position_embeddings − --max-new-tokens; not tokenized`,
        );
        continue;
      }
    }
    let ids: number[];
    try {
      ids = await promptIds(setup, messages);
    } catch (e) {
      if (!isChatsftError(e) || e.code !== 'TEMPLATE_ERROR') throw e;
      rep.drop(parsed.line, 'template_error', 'messages', e.message);
      continue;
    }
    if (o.maxPromptTokens !== undefined && ids.length > o.maxPromptTokens) {
      rep.drop(
        parsed.line,
        'too_long',
        'messages',
        `prompt is ${ids.length} tokens; with --max-new-tokens it would pass max_position_embeddings (at most ${o.maxPromptTokens} prompt tokens)`,
      );
      continue;
    }
    const content = typeof last.content === 'string' ? last.content : '';
    const reference = content === '' ? [] : (await setup.tokenizer.encode(content, null, { addSpecialTokens: false })).getIds();
    rep.use();
    prompts.push({ line: parsed.line, messages, ids, referenceTokens: reference.length });
  }
  return { prompts, skipped: totalDropped(rep.report), report: rep.report };
}

/** Mean supervised cross-entropy of rows, in batches (no gradients). */
export async function meanLoss(
  model: LlamaModel,
  rows: Row[],
  setup: TokenizerSetup,
  batchSize = 16,
): Promise<{ loss: number; tokens: number }> {
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
export function engineGenerateBatch(
  model: LlamaModel,
  sampling: { temperature?: number; topK?: number; topP?: number; seed?: number } = {},
): GenerateBatch {
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
  const maxPositions = opts.maxPositions ?? model?.config.maxPositionEmbeddings;

  // Prompts and every size check first: a refused run must not spend the loss pass first.
  let prompts: EvalPrompt[] = [];
  let skipped = 0;
  let dataReport: DataReport | null = null;
  const generateBatch = opts.generateBatch ?? (model ? engineGenerateBatch(model) : undefined);
  if (!opts.lossOnly) {
    if (!generateBatch) throw new ChatsftError('USAGE', 'evaluateModel needs a model or a generateBatch function');
    if (maxPositions !== undefined && opts.maxNewTokens >= maxPositions) {
      throw new ChatsftError(
        'USAGE',
        `--max-new-tokens ${opts.maxNewTokens} leaves no room for a prompt: the model has max_position_embeddings ${maxPositions}`,
      );
    }
    ({
      prompts,
      skipped,
      report: dataReport,
    } = await evalPrompts(setup, opts.data, {
      ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
      allowSpecialTokensInContent: opts.encode?.allowSpecialTokensInContent ?? false,
      ...(maxPositions !== undefined ? { maxPromptTokens: maxPositions - opts.maxNewTokens } : {}),
      ...(opts.onIssue ? { onIssue: opts.onIssue } : {}),
    }));
    if (prompts.length === 0) {
      throw new ChatsftError(
        'DATA_INVALID',
        `nothing to evaluate: ${dataSummary(dataReport, 'skipped')}${dataReport.issues[0] ? `; first: ${dataReport.issues[0]}` : ''}`,
      );
    }

    if (model && !opts.generateBatch) {
      const longest = Math.max(...prompts.map((p) => p.ids.length));
      checkKvCacheFits(
        model.config,
        Math.min(opts.batchSize ?? 16, prompts.length),
        longest + opts.maxNewTokens,
        '--max-new-tokens or --batch-size',
      );
    }
  }

  // Loss over the conversations as `prepare` would label them.
  const t0 = performance.now();
  let loss: number | null = null;
  let lossTokens = 0;
  let lossExamples = 0;
  let lossReport: DataReport | null = null;
  if (model) {
    // Rows past the model's positions are dropped as too_long rather than run silently.
    const cap = maxPositions !== undefined ? Math.min(maxPositions, opts.encode?.maxLength ?? Infinity) : opts.encode?.maxLength;
    const encode = { ...(opts.encode ?? {}), ...(cap !== undefined ? { maxLength: cap } : {}) };
    const { rows, stats } = await prepareRows(setup, opts.data, {
      ...encode,
      ...(opts.lossOnly && opts.onIssue ? { onIssue: opts.onIssue } : {}),
    });
    lossReport = reportOf(opts.data, stats);
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
    skipped: lossReport ? Object.values(lossReport.dropped).reduce((a, b) => a + b, 0) : 0,
    data_report: null,
    loss_data_report: lossReport,
    seconds: { loss: lossSeconds, generation: 0 },
  };
  if (opts.lossOnly || !generateBatch) return { report: base, rows: [] };

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
      data_report: dataReport,
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
