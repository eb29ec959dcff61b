/**
 * Greedy generation on any GGUF through llama.cpp (node-llama-cpp's prebuilt
 * binaries; nothing is downloaded or built), returning the same per-prompt
 * result as chatsft's generator so the stop-rate metrics apply unchanged.
 *
 *   const r = await generateWithLlamaCpp('model.gguf', [renderedPrompt], { maxNewTokens: 64 });
 *
 * Prompts are evaluated as given: a string is tokenized with special tokens
 * parsed and nothing added (no BOS, no chat wrapper), like Hugging Face's
 * `apply_chat_template(..., tokenize=True)`; a token array is used as is.
 */
import { ChatsftError } from '../errors.js';
import type { RowResult } from '../generate/types.js';

/** One generation, the same shape as chatsft's own generator returns per row. */
export type GenerationResult = RowResult;

export type LlamaCppPrompt = number[] | string;

export interface LlamaCppOptions {
  /** Context size; default: longest prompt + maxNewTokens (what generation needs). */
  contextSize?: number;
  /** CPU threads for llama.cpp; default: its own choice (physical cores). */
  threads?: number;
  /** 'auto' lets node-llama-cpp use a prebuilt GPU binary (CUDA/Vulkan) when one loads; default CPU only. */
  gpu?: 'auto' | false;
}

export interface LlamaCppGenerateOptions extends LlamaCppOptions {
  maxNewTokens: number;
  /** Ids that end generation; default: llama.cpp's own end-of-generation set, i.e. what a deployed runtime does. */
  stopIds?: number[];
}

/** A loaded GGUF model. `close()` frees it. */
export interface LlamaCppRunner {
  tokenize(text: string): number[];
  detokenize(ids: number[]): string;
  /** Whether llama.cpp ends generation on this id (its EOG set). */
  isEog(id: number): boolean;
  eosId: number | null;
  eotId: number | null;
  /** Greedy generation of one prompt; `onToken` sees each new id as it comes (for timing). */
  generate(
    prompt: LlamaCppPrompt,
    maxNewTokens: number,
    stopIds?: readonly number[],
    onToken?: (id: number) => void,
  ): Promise<GenerationResult>;
  close(): Promise<void>;
}

/*
 * node-llama-cpp is an optional dependency (its prebuilt CUDA/Vulkan binaries
 * are most of a default install), loaded on first use. These are the few
 * parts of its API used here, declared locally so chatsft builds and imports
 * without it.
 */
interface LlamaSequenceApi {
  clearHistory(): Promise<void>;
  evaluate(tokens: number[], o: { temperature: number; yieldEogToken: boolean }): AsyncIterable<number>;
}
interface LlamaContextApi {
  readonly contextSize: number;
  getSequence(): LlamaSequenceApi;
  dispose(): Promise<void>;
}
interface LlamaModelApi {
  tokenize(text: string, specialTokens: boolean): number[];
  detokenize(ids: number[], specialTokens: boolean): string;
  isEogToken(id: number): boolean;
  readonly tokens: { eos: number | null; eot: number | null };
  createContext(o: { contextSize: number; sequences: number; threads?: number }): Promise<LlamaContextApi>;
  dispose(): Promise<void>;
}
interface Llama {
  loadModel(o: { modelPath: string; gpuLayers: 'auto' | number }): Promise<LlamaModelApi>;
}
interface NodeLlamaCpp {
  getLlama(o: { gpu: 'auto' | false; build: 'never'; progressLogs: boolean; logLevel: unknown }): Promise<Llama>;
  LlamaLogLevel: { error: unknown };
}

/** The package name, not a literal in import(): TypeScript must not require it at build time. */
const NODE_LLAMA_CPP = 'node-llama-cpp';
export const LLAMA_CPP_INSTALL_HINT = 'eval --engine llama.cpp needs the optional llama.cpp runtime: npm install node-llama-cpp@3.21.1';

const llamas = new Map<string, Promise<Llama>>();

async function loadBinding(gpu: 'auto' | false): Promise<{ mod: NodeLlamaCpp; llama: Llama }> {
  let mod: NodeLlamaCpp;
  try {
    mod = (await import(NODE_LLAMA_CPP)) as NodeLlamaCpp;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND') throw new ChatsftError('ENGINE_ERROR', LLAMA_CPP_INSTALL_HINT);
    throw new ChatsftError('ENGINE_ERROR', `node-llama-cpp did not load: ${(e as Error).message}`);
  }
  const key = String(gpu);
  let p = llamas.get(key);
  if (!p) {
    // build 'never': use the prebuilt binary or fail; never compile or download at run time.
    p = mod.getLlama({ gpu, build: 'never', progressLogs: false, logLevel: mod.LlamaLogLevel.error });
    llamas.set(key, p);
    p.catch(() => llamas.delete(key));
  }
  try {
    return { mod, llama: await p };
  } catch (e) {
    throw new ChatsftError('ENGINE_ERROR', `llama.cpp binary for this machine did not load: ${(e as Error).message}`);
  }
}

/** Load a GGUF for generation; `contextSize` must cover prompt + new tokens. */
export async function openLlamaCpp(ggufPath: string, contextSize: number, opts: LlamaCppOptions = {}): Promise<LlamaCppRunner> {
  const { llama } = await loadBinding(opts.gpu ?? false);
  let model: LlamaModelApi;
  try {
    model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: opts.gpu === 'auto' ? 'auto' : 0 });
  } catch (e) {
    throw new ChatsftError('MODEL_INVALID', `llama.cpp could not load the model: ${(e as Error).message}`, ggufPath);
  }
  const context = await model.createContext({
    contextSize,
    sequences: 1,
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
  });
  const sequence = context.getSequence();

  const runner: LlamaCppRunner = {
    tokenize: (text) => model.tokenize(text, true).map(Number),
    detokenize: (ids) => model.detokenize(ids, true),
    isEog: (id) => model.isEogToken(id),
    eosId: model.tokens.eos === null ? null : Number(model.tokens.eos),
    eotId: model.tokens.eot === null ? null : Number(model.tokens.eot),
    async generate(prompt, maxNewTokens, stopIds, onToken) {
      const ids = typeof prompt === 'string' ? runner.tokenize(prompt) : prompt;
      if (ids.length === 0) throw new ChatsftError('USAGE', 'empty prompt');
      if (ids.length + maxNewTokens > context.contextSize) {
        throw new ChatsftError(
          'USAGE',
          `prompt (${ids.length}) + maxNewTokens (${maxNewTokens}) exceeds the context size ${context.contextSize}`,
        );
      }
      const stops = stopIds ? new Set(stopIds) : null;
      const isStop = (t: number): boolean => (stops ? stops.has(t) : runner.isEog(t));
      await sequence.clearHistory();
      const tokens: number[] = [];
      let stoppedBy: number | null = null;
      if (maxNewTokens > 0) {
        // temperature 0 = greedy (argmax) in llama.cpp's sampler chain; no repeat penalty is set.
        // yieldEogToken: node-llama-cpp would otherwise end silently on EOG, hiding which id stopped it
        // and ending generation even when the caller chose other stop ids.
        for await (const t of sequence.evaluate([...ids], { temperature: 0, yieldEogToken: true })) {
          const id = Number(t);
          onToken?.(id);
          if (isStop(id)) {
            stoppedBy = id;
            break;
          }
          tokens.push(id);
          if (tokens.length >= maxNewTokens) break;
        }
      }
      return { tokens, stoppedBy, hitMaxNewTokens: stoppedBy === null && tokens.length >= maxNewTokens };
    },
    async close() {
      await context.dispose();
      await model.dispose();
    },
  };
  return runner;
}

/**
 * Greedy generation for each prompt, one at a time (batch 1), stopping at the
 * first stop id. Prompts may be rendered text or token ids.
 */
export async function generateWithLlamaCpp(
  ggufPath: string,
  prompts: readonly LlamaCppPrompt[],
  opts: LlamaCppGenerateOptions,
): Promise<GenerationResult[]> {
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0)
    throw new ChatsftError('USAGE', `maxNewTokens must be a non-negative integer (got ${opts.maxNewTokens})`);
  // The context must hold the longest prompt plus the new tokens. Text prompts
  // need llama.cpp's tokenizer to be counted, so the model is opened first and
  // reopened only if the probe context is too small.
  const arrayNeed = (ps: readonly number[][]): number => Math.max(1, ...ps.map((x) => x.length)) + opts.maxNewTokens;
  let runner: LlamaCppRunner;
  let ids: readonly number[][];
  if (prompts.every((p): p is number[] => typeof p !== 'string')) {
    ids = prompts;
    runner = await openLlamaCpp(ggufPath, opts.contextSize ?? arrayNeed(ids), opts);
  } else {
    runner = await openLlamaCpp(ggufPath, opts.contextSize ?? 512, opts);
    const r = runner;
    ids = prompts.map((p) => (typeof p === 'string' ? r.tokenize(p) : p));
    if (opts.contextSize === undefined && arrayNeed(ids) > 512) {
      await runner.close();
      runner = await openLlamaCpp(ggufPath, arrayNeed(ids), opts);
    }
  }
  try {
    const out: GenerationResult[] = [];
    for (const p of ids) out.push(await runner.generate(p, opts.maxNewTokens, opts.stopIds));
    return out;
  } finally {
    await runner.close();
  }
}
