// chatsft generate --model out/ --prompt "Count from 3 to 9." [--raw] [--data chats.jsonl] [--temperature 0.7 --top-p 0.9 --seed 1] [--json]
import type { Command } from 'commander';
import { ChatsftError } from '../errors.js';
import { initEngine, loadModel, parseLlamaConfig, readLlamaConfig, type LlamaModel } from '../engine/index.js';
import { assertPlanFits, describePlan, planMemory, type PlanInput } from '../engine/plan.js';
import path, { join } from 'node:path';
import type { DataReport } from '../data/report.js';
import { engineStepModel, generate, type RowResult } from '../generate/index.js';
import { chatRuntime, encodeText, promptIds, setupForInference, type ChatRuntime } from '../eval/runtime.js';
import { evalPrompts, type EvalPrompt } from '../eval/evaluate.js';
import { dataSummary } from '../data/report.js';
import { certainlyOver } from '../data/limits.js';
import { loadModelFolder } from '../model/folder.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { createProgress } from '../util/progress.js';
import { action, addConfigFlags, configFrom, printJson } from './common.js';
import { intFlag, numFlag, optInt, printDataReport } from './flags.js';
import { checkKvCacheFits, checkNewTokensFit, checkPromptFits } from '../generate/limits.js';
import { specialMatcher } from '../tokenize/special.js';

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

export async function loadGenerator(
  modelDir: string,
  template: string,
  opts: { allowExtraTensors?: boolean; quiet?: boolean; ready?: TokenizerSetup } = {},
): Promise<LoadedGenerator> {
  const setup = opts.ready ?? setupForInference(loadModelFolder(modelDir), template);
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

export function samplingFrom(opts: Record<string, unknown>, defaultMaxNewTokens: number): SamplingFlags {
  const num = (key: string, flag: string, fallback: number, r: Parameters<typeof numFlag>[2]): number =>
    opts[key] === undefined ? fallback : numFlag(opts[key], flag, r);
  return {
    maxNewTokens: optInt(opts, 'maxNewTokens', 'max-new-tokens', defaultMaxNewTokens, { min: 1 }),
    temperature: num('temperature', 'temperature', 0, { min: 0 }),
    topK: optInt(opts, 'topK', 'top-k', 0, { min: 0 }),
    topP: num('topP', 'top-p', 1, { above: 0, max: 1 }),
    seed: optInt(opts, 'seed', 'seed', 0),
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
  const cmd = program
    .command('generate')
    .description('generate from a model folder; stops at the template EOT, generation_config eos and tokenizer eos');
  addConfigFlags(cmd, ['model', 'template', 'data', 'allow_special_tokens_in_content'])
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
        if ((prompt === undefined) === (dataFile === undefined))
          throw new ChatsftError('USAGE', 'give exactly one of --prompt TEXT or --data FILE');
        if (opts['raw'] && opts['system'] !== undefined) {
          throw new ChatsftError(
            'USAGE',
            '--system needs the chat template; with --raw the prompt is plain text (put the system text in --prompt)',
          );
        }
        if (dataFile !== undefined && (opts['raw'] || opts['system'] !== undefined)) {
          throw new ChatsftError('USAGE', '--raw and --system apply to --prompt; with --data the prompts come from the conversations');
        }
        const s = samplingFrom(opts, 128);
        const batchSize = intFlag(opts['batchSize'], 'batch-size', { min: 1 });
        // Every check first, from config.json and the tokenizer: a refused run starts no engine and loads no weights.
        const setup = setupForInference(loadModelFolder(cfg.model), cfg.template);
        const shape = setup.folder.modelConfig ? parseLlamaConfig(setup.folder.modelConfig, join(cfg.model, 'config.json')) : undefined;
        const maxPositions = shape?.maxPositionEmbeddings;
        if (maxPositions !== undefined) checkNewTokensFit(s.maxNewTokens, maxPositions);
        const quiet = Boolean(opts['quiet']);
        const json = Boolean(opts['json']);

        let ids: number[] = [];
        let prompts: EvalPrompt[] = [];
        let report: DataReport | undefined;
        if (prompt !== undefined) {
          const messages = [
            ...(opts['system'] !== undefined ? [{ role: 'system' as const, content: String(opts['system']) }] : []),
            { role: 'user' as const, content: prompt },
          ];
          if (!opts['raw'] && !cfg.allow_special_tokens_in_content) {
            // As prepare does (SPEC §3): typed special-token text would become a real control token.
            const matcher = specialMatcher(setup.specialStrings);
            for (const [flag, text] of [
              ['--system', opts['system']],
              ['--prompt', prompt],
            ] as const) {
              const found = typeof text === 'string' ? matcher.find(text) : undefined;
              if (found !== undefined)
                throw new ChatsftError(
                  'USAGE',
                  `${flag} contains the special token ${found} (pass --allow-special-tokens-in-content to keep it, or --raw for plain text)`,
                );
            }
          }
          // Characters first: a prompt far past the positions is refused without tokenizing it.
          const over = maxPositions !== undefined ? certainlyOver(setup.tokenizer, { messages }, maxPositions - s.maxNewTokens) : undefined;
          if (over && maxPositions !== undefined) {
            throw new ChatsftError(
              'USAGE',
              `--prompt has ${over.chars} characters, more than the ${maxPositions - s.maxNewTokens} tokens left by max_position_embeddings ${maxPositions} − --max-new-tokens ${s.maxNewTokens} can hold; shorten --prompt or lower --max-new-tokens`,
            );
          }
          ids = opts['raw'] ? await encodeText(setup, prompt) : await promptIds(setup, messages);
          if (ids.length === 0) throw new ChatsftError('USAGE', '--prompt is empty');
          if (maxPositions !== undefined) checkPromptFits(ids.length, s.maxNewTokens, maxPositions);
          if (shape) checkKvCacheFits(shape, 1, ids.length + s.maxNewTokens);
        } else {
          // --data: prompts = conversations without their last assistant turn, read as prepare reads them.
          ({ prompts, report } = await evalPrompts(setup, dataFile as string, {
            allowSpecialTokensInContent: cfg.allow_special_tokens_in_content,
            ...(maxPositions !== undefined ? { maxPromptTokens: maxPositions - s.maxNewTokens } : {}),
          }));
          printDataReport(report, { quiet, verb: 'skipped' });
          if (prompts.length === 0) throw new ChatsftError('DATA_INVALID', `no prompt to generate from: ${dataSummary(report, 'skipped')}`);
          const longest = Math.max(...prompts.map((p) => p.ids.length));
          if (shape)
            checkKvCacheFits(shape, Math.min(batchSize, prompts.length), longest + s.maxNewTokens, '--max-new-tokens or --batch-size');
        }

        const { model, runtime } = await loadGenerator(cfg.model, cfg.template, { ready: setup });
        const sampling = {
          maxNewTokens: s.maxNewTokens,
          stopIds: runtime.stopIds,
          temperature: s.temperature,
          topK: s.topK,
          topP: s.topP,
          seed: s.seed,
        };
        if (prompt !== undefined) {
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

        const progress = createProgress({ label: 'generate', total: prompts.length, unit: 'prompts', silent: quiet });
        const out: GenJson[] = [];
        for (let i = 0; i < prompts.length; i += batchSize) {
          const chunk = prompts.slice(i, i + batchSize);
          // Seeds per row (seed + line) so a prompt samples the same tokens whatever its batch.
          const results = await generate(
            engineStepModel(model),
            chunk.map((p) => p.ids),
            { ...sampling, seed: chunk.map((p) => s.seed + p.line) },
          );
          for (let k = 0; k < chunk.length; k++) {
            const p = chunk[k]!;
            const last = p.messages[p.messages.length - 1];
            out.push(await toJson(setup, last?.content ?? '', results[k]!, p.line));
          }
          progress.update(Math.min(i + batchSize, prompts.length), { tokens: results.reduce((n, r) => n + r.tokens.length, 0) });
        }
        progress.done();
        if (json) {
          printJson({ stop_ids: runtime.stopIds, results: out, data_report: report });
          return;
        }
        for (const g of out) {
          const end = g.stopped_by !== null ? `stopped by ${g.stop_token}` : 'did not stop';
          process.stdout.write(`--- line ${g.line}: ${g.prompt}\n${g.text}\n[${end}, ${g.new_tokens} tokens]\n`);
        }
      }),
    );
}
