// chatsft generate --model out/ --prompt "Count from 3 to 9." [--raw] [--data chats.jsonl] [--temperature 0.7 --top-p 0.9 --seed 1] [--json]
import type { Command } from 'commander';
import { ChatsftError } from '../errors.js';
import { initEngine, loadModel, readLlamaConfig, type LlamaModel } from '../engine/index.js';
import { assertPlanFits, describePlan, planMemory, type PlanInput } from '../engine/plan.js';
import path from 'node:path';
import { engineStepModel, generate, type RowResult } from '../generate/index.js';
import { chatRuntime, encodeText, promptIds, setupForInference, type ChatRuntime } from '../eval/runtime.js';
import { evalPrompts } from '../eval/evaluate.js';
import { loadModelFolder } from '../model/folder.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { createProgress } from '../util/progress.js';
import { action, addConfigFlags, configFrom, printJson } from './common.js';

/** A model folder ready to generate: tokenizer setup, weights, stop ids. */
export interface LoadedGenerator {
  setup: TokenizerSetup;
  model: LlamaModel;
  runtime: ChatRuntime;
}

/**
 * Positions the inference plan reserves for: a prompt plus its new tokens
 * (prefill activations grow with the prompt; the KV cache is host memory).
 */
const PLAN_TOKENS = 512; // = PREFILL_CHUNK: longer prompts are prefilled in chunks

export async function loadGenerator(modelDir: string, template: string, opts: { allowExtraTensors?: boolean; quiet?: boolean } = {}): Promise<LoadedGenerator> {
  const setup = setupForInference(loadModelFolder(modelDir), template);
  // Plan first: layers that do not fit the wasm heap stay in host memory (uploaded per layer).
  const config = readLlamaConfig(path.join(modelDir, 'config.json'));
  const inp: PlanInput = { config, mode: 'infer', batchSize: 1, seqLen: Math.min(config.maxPositionEmbeddings, PLAN_TOKENS) };
  const plan = planMemory(inp);
  if (!opts.quiet && (plan.parameters > 50e6 || !plan.fits)) process.stderr.write(describePlan(plan, 'infer') + '\n');
  assertPlanFits(plan, inp, modelDir);
  await initEngine();
  const loading = createProgress({ label: 'load', unit: 'MB', silent: Boolean(opts.quiet) || plan.parameters < 50e6 });
  const model = loadModel(modelDir, {
    hostLayers: plan.hostLayers,
    hostEmbedding: plan.hostEmbedding,
    frozenHead: plan.frozenHead,
    // f32 host layers decode fastest (no conversion per token) but take twice the RAM of bf16.
    hostF32: plan.host * 2 <= 4 * 1024 ** 3,
    ...(opts.allowExtraTensors ? { allowExtraTensors: true } : {}),
    onProgress: (bytes, total) => {
      loading.setTotal(Math.round(total / 1e6));
      loading.update(Math.round(bytes / 1e6));
    },
  });
  loading.done('weights loaded');
  if (model.config.vocabSize < setup.vocabSize) {
    throw new ChatsftError(
      'MODEL_INVALID',
      `the tokenizer has ${setup.vocabSize} tokens (with the ones added for the template) but the model only ${model.config.vocabSize} embeddings; train or export with this template first`,
      modelDir,
    );
  }
  return { setup, model, runtime: await chatRuntime(setup) };
}

export interface SamplingFlags {
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

function num(opts: Record<string, unknown>, key: string, flag: string, fallback: number, check: (x: number) => boolean, what: string): number {
  const raw = opts[key];
  if (raw === undefined) return fallback;
  const x = Number(raw);
  if (!Number.isFinite(x) || !check(x)) throw new ChatsftError('USAGE', `--${flag} must be ${what}, got ${String(raw)}`);
  return x;
}

export function samplingFrom(opts: Record<string, unknown>, defaultMaxNewTokens: number): SamplingFlags {
  return {
    maxNewTokens: num(opts, 'maxNewTokens', 'max-new-tokens', defaultMaxNewTokens, (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1'),
    temperature: num(opts, 'temperature', 'temperature', 0, (x) => x >= 0, '>= 0'),
    topK: num(opts, 'topK', 'top-k', 0, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    topP: num(opts, 'topP', 'top-p', 1, (x) => x > 0 && x <= 1, 'in (0, 1]'),
    seed: num(opts, 'seed', 'seed', 0, Number.isInteger, 'an integer'),
  };
}

export function addSamplingFlags(cmd: Command, defaultMaxNewTokens: number): Command {
  return cmd
    .option('--max-new-tokens <n>', `most new tokens per reply (default ${defaultMaxNewTokens})`)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (default 0)')
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = off)')
    .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
    .option('--seed <n>', 'sampling seed (default 0)');
}

/**
 * Incremental decoding for streaming: decodes all ids so far and returns the
 * new suffix, holding back a trailing U+FFFD (a multi-byte character whose
 * remaining bytes are still to come).
 */
export function streamDecoder(setup: TokenizerSetup): { push(id: number): Promise<string>; flush(): Promise<string> } {
  const ids: number[] = [];
  let shown = 0;
  const emit = async (final: boolean): Promise<string> => {
    let text = await setup.tokenizer.decode(ids, false);
    if (!final) while (text.endsWith('\uFFFD')) text = text.slice(0, -1);
    const out = text.length > shown ? text.slice(shown) : '';
    shown = Math.max(shown, text.length);
    return out;
  };
  return {
    push: async (id) => {
      ids.push(id);
      return emit(false);
    },
    flush: () => emit(true),
  };
}

/** Human-readable end of a generation: which stop id ended it, or why it did not. */
export function endingNote(setup: TokenizerSetup, r: RowResult, maxNewTokens: number): string {
  if (r.stoppedBy !== null) {
    const tok = setup.tokenizer.idToToken(r.stoppedBy) ?? '?';
    return `stopped by ${tok} (id ${r.stoppedBy}) after ${r.tokens.length} tokens`;
  }
  return r.hitMaxNewTokens ? `did not stop: hit max_new_tokens ${maxNewTokens}` : `ended after ${r.tokens.length} tokens`;
}

interface GenJson {
  line?: number;
  prompt: string;
  text: string;
  tokens: number[];
  new_tokens: number;
  stopped_by: number | null;
  stop_token: string | null;
  hit_max_new_tokens: boolean;
}

async function toJson(setup: TokenizerSetup, prompt: string, r: RowResult, line?: number): Promise<GenJson> {
  return {
    ...(line !== undefined ? { line } : {}),
    prompt,
    text: r.tokens.length ? await setup.tokenizer.decode(r.tokens, false) : '',
    tokens: r.tokens,
    new_tokens: r.tokens.length,
    stopped_by: r.stoppedBy,
    stop_token: r.stoppedBy === null ? null : (setup.tokenizer.idToToken(r.stoppedBy) ?? null),
    hit_max_new_tokens: r.hitMaxNewTokens,
  };
}

export function registerGenerate(program: Command): void {
  const cmd = program.command('generate').description('generate from a model folder; stops at the template EOT, generation_config eos and tokenizer eos');
  addConfigFlags(cmd, ['model', 'template', 'data'])
    .option('--prompt <text>', 'a user message (rendered with the chat template and generation prompt)')
    .option('--system <text>', 'a system message before the prompt')
    .option('--raw', 'use --prompt as plain text, without the chat template');
  addSamplingFlags(cmd, 128)
    .option('--batch-size <n>', 'prompts per batch with --data', '16')
    .option('--json', 'print results as JSON on stdout')
    .option('--quiet', 'no progress or notes on stderr')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (!cfg.model) throw new ChatsftError('USAGE', 'missing --model DIR');
        const prompt = opts['prompt'] as string | undefined;
        const dataFile = cfg.data.train;
        if ((prompt === undefined) === (dataFile === undefined)) throw new ChatsftError('USAGE', 'give exactly one of --prompt TEXT or --data FILE');
        const s = samplingFrom(opts, 128);
        const batchSize = Number(opts['batchSize']);
        if (!Number.isInteger(batchSize) || batchSize < 1) throw new ChatsftError('USAGE', '--batch-size must be a positive integer');
        const { setup, model, runtime } = await loadGenerator(cfg.model, cfg.template);
        const quiet = Boolean(opts['quiet']);
        const json = Boolean(opts['json']);
        const sampling = { maxNewTokens: s.maxNewTokens, stopIds: runtime.stopIds, temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed };

        if (prompt !== undefined) {
          const messages = [...(opts['system'] ? [{ role: 'system' as const, content: String(opts['system']) }] : []), { role: 'user' as const, content: prompt }];
          const ids = opts['raw'] ? await encodeText(setup, prompt) : await promptIds(setup, messages);
          if (ids.length === 0) throw new ChatsftError('USAGE', '--prompt is empty');
          // Streamed to stdout as chosen (stop ids are never passed to onToken).
          const dec = streamDecoder(setup);
          let pending: Promise<void> = Promise.resolve();
          const [r] = await generate(engineStepModel(model), [ids], {
            ...sampling,
            ...(json ? {} : { onToken: (e) => (pending = pending.then(async () => void process.stdout.write(await dec.push(e.token)))) }),
          });
          const result = r as RowResult;
          if (json) {
            printJson({ stop_ids: runtime.stopIds, prompt_tokens: ids.length, ...(await toJson(setup, prompt, result)) });
          } else {
            await pending;
            process.stdout.write((await dec.flush()) + '\n');
            if (!quiet) process.stderr.write(`[${endingNote(setup, result, s.maxNewTokens)}]\n`);
          }
          return;
        }

        // --data: prompts = conversations without their last assistant turn.
        const { prompts, skipped } = await evalPrompts(setup, dataFile as string);
        if (prompts.length === 0) throw new ChatsftError('DATA_INVALID', 'no conversation ends with an assistant turn', dataFile);
        if (skipped && !quiet) process.stderr.write(`note: ${skipped} line(s) skipped (not ending with an assistant turn, or invalid)\n`);
        const progress = createProgress({ label: 'generate', total: prompts.length, unit: 'prompts', silent: quiet });
        const out: GenJson[] = [];
        for (let i = 0; i < prompts.length; i += batchSize) {
          const chunk = prompts.slice(i, i + batchSize);
          // Seeds per row (seed + line) so a prompt samples the same tokens whatever its batch.
          const results = await generate(engineStepModel(model), chunk.map((p) => p.ids), { ...sampling, seed: chunk.map((p) => s.seed + p.line) });
          for (let k = 0; k < chunk.length; k++) {
            const p = chunk[k]!;
            const last = p.messages[p.messages.length - 1];
            out.push(await toJson(setup, last?.content ?? '', results[k]!, p.line));
          }
          progress.update(Math.min(i + batchSize, prompts.length), { tokens: results.reduce((n, r) => n + r.tokens.length, 0) });
        }
        progress.done();
        if (json) {
          printJson({ stop_ids: runtime.stopIds, results: out });
          return;
        }
        for (const g of out) {
          const end = g.stopped_by !== null ? `stopped by ${g.stop_token}` : 'did not stop';
          process.stdout.write(`--- line ${g.line}: ${g.prompt}\n${g.text}\n[${end}, ${g.new_tokens} tokens]\n`);
        }
      }),
    );
}
