/**
 * Size checks made before generating (issue 10 §6): the prompt plus the new
 * tokens must fit the model's positions (rotary positions past
 * max_position_embeddings give garbage, silently), and the KV cache, which
 * is preallocated for prompt + max_new_tokens, must fit in memory
 * (`--max-new-tokens 1e9` once sized a 64 GB cache).
 */
import { freemem } from 'node:os';
import { ChatsftError } from '../errors.js';

/** The model shape the KV cache depends on. */
export interface KvShape {
  numHiddenLayers: number;
  numKeyValueHeads: number;
  headDim: number;
}

/** Bytes of the cache for `batch` rows of `length` positions: keys + values, f32, [layers][B, KV, length, hd]. */
export function kvCacheBytes(c: KvShape, batch: number, length: number): number {
  return 2 * c.numHiddenLayers * batch * c.numKeyValueHeads * length * c.headDim * 4;
}

/** Memory the cache may take: half of what the OS reports available, the rest is for weights and activations. */
export function kvBudgetBytes(): number {
  const env = Number(process.env['CHATSFT_KV_BUDGET_BYTES']);
  return Number.isFinite(env) && env > 0 ? env : freemem() / 2;
}

const gib = (b: number): string =>
  b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(b / 1024)} KiB`;

/** Refuse a budget of new tokens that leaves no room for any prompt. */
export function checkNewTokensFit(maxNewTokens: number, maxPositions: number): void {
  if (maxNewTokens >= maxPositions) {
    throw new ChatsftError(
      'USAGE',
      `--max-new-tokens ${maxNewTokens} leaves no room for a prompt: the model has max_position_embeddings ${maxPositions} (prompt + new tokens must fit)`,
    );
  }
}

/** Refuse a prompt that, with the new tokens, passes the model's positions. */
export function checkPromptFits(promptTokens: number, maxNewTokens: number, maxPositions: number, promptFlag = '--prompt'): void {
  if (promptTokens + maxNewTokens > maxPositions) {
    throw new ChatsftError(
      'USAGE',
      `${promptFlag} is ${promptTokens} tokens and --max-new-tokens is ${maxNewTokens}: ${promptTokens + maxNewTokens} > max_position_embeddings ${maxPositions} of the model; shorten ${promptFlag} or lower --max-new-tokens`,
    );
  }
}

/** Refuse a KV cache larger than the memory budget, naming the flags that size it. */
export function checkKvCacheFits(c: KvShape, batch: number, length: number, flags = '--max-new-tokens'): void {
  const need = kvCacheBytes(c, batch, length);
  const budget = kvBudgetBytes();
  if (need > budget) {
    throw new ChatsftError(
      'USAGE',
      `the KV cache for ${batch} row(s) of ${length} positions needs ${gib(need)}, more than the ${gib(budget)} available for it; lower ${flags}`,
    );
  }
}
