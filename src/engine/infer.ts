/**
 * Inference with a key/value cache for the generator: a prefill of many
 * tokens, then one token per call. Works on token ids only.
 */
import { tf } from './backend.js';
import { ChatsftError } from '../errors.js';
import { attention } from './ops.js';
import { decodeStep, readTensors } from './decode.js';
import { embedIds, finishLayer, headMatrix, qkv, rmsNorm, ropeTables, type LayerInput } from './forward.js';
import type { LlamaModel } from './types.js';
import { withLayer } from './weights.js';

/** Prompt positions run through the model at once (see forwardWithCache). */
export const PREFILL_CHUNK = 512;

export interface KvCache {
  batchSize: number;
  maxLen: number;
  /** Slots filled so far (the same for every row). */
  length: number;
  /**
   * Per layer: keys / values as [B, KV, maxLen, hd] row-major, slots
   * < length filled. Plain JS memory preallocated to maxLen: a decode step
   * writes its one new slot in place and reads the cache without copies,
   * where immutable tensors needed an O(length) concat per token.
   */
  k: Float32Array[];
  v: Float32Array[];
  /** [B, maxLen]: 1 where a slot holds a real token (padding slots are never attended). */
  valid: Uint8Array;
  /**
   * The output matrix [d, V], made once per cache (weights do not change
   * while generating) instead of once per token; owned by the cache.
   */
  head: tf.Tensor2D | null;
}

export function createKvCache(model: LlamaModel, batchSize: number, maxLen: number): KvCache {
  const c = model.config;
  const size = batchSize * c.numKeyValueHeads * maxLen * c.headDim;
  const bufs = (): Float32Array[] => Array.from({ length: c.numHiddenLayers }, () => new Float32Array(size));
  return { batchSize, maxLen, length: 0, k: bufs(), v: bufs(), valid: new Uint8Array(batchSize * maxLen), head: null };
}

export function disposeKvCache(cache: KvCache): void {
  cache.head?.dispose();
  cache.head = null;
  cache.length = 0;
}

/** Slots [from, from + n) of every (row, kv head) block of a cache buffer, as [B, KV, n, hd]. */
function readSlots(cache: KvCache, buf: Float32Array, hd: number, from: number, n: number): Float32Array {
  const rows = buf.length / (cache.maxLen * hd);
  const out = new Float32Array(rows * n * hd);
  for (let r = 0; r < rows; r++) out.set(buf.subarray((r * cache.maxLen + from) * hd, (r * cache.maxLen + from + n) * hd), r * n * hd);
  return out;
}

/** Writes `data` [B, KV, n, hd] into slots [from, from + n) of a cache buffer. */
function writeSlots(cache: KvCache, buf: Float32Array, hd: number, from: number, data: Float32Array): void {
  const rows = buf.length / (cache.maxLen * hd);
  const n = data.length / (rows * hd);
  for (let r = 0; r < rows; r++) buf.set(data.subarray(r * n * hd, (r + 1) * n * hd), (r * cache.maxLen + from) * hd);
}

/**
 * Run `ids` [B, t] (new tokens, same t for every row) at `positions` [B, t]
 * through the model, appending their keys/values to `cache`. `mask` [B, t]
 * (1 real, 0 padding; default all real) keeps left-padding out of attention.
 * Returns the logits of each row's last new position, [B, vocab] flat.
 * t = 1 (decoding) takes decodeStep's path; longer inputs (prefill) the
 * general tensor forward.
 */
export function forwardWithCache(
  model: LlamaModel,
  ids: number[][],
  cache: KvCache,
  positions: number[][],
  mask?: number[][],
): Float32Array {
  const B = cache.batchSize;
  const t = ids[0]?.length ?? 0;
  if (ids.length !== B || positions.length !== B || ids.some((r) => r.length !== t) || positions.some((r) => r.length !== t) || t === 0) {
    throw new ChatsftError('ENGINE_ERROR', `forwardWithCache: ids and positions must be [${B}, t] with t ≥ 1 equal across rows`);
  }
  const past = cache.length;
  const S = past + t;
  if (S > cache.maxLen) throw new ChatsftError('ENGINE_ERROR', `KV cache full: ${S} > maxLen ${cache.maxLen}`);
  for (let b = 0; b < B; b++) for (let i = 0; i < t; i++) cache.valid[b * cache.maxLen + past + i] = mask ? (mask[b]![i] ? 1 : 0) : 1;
  // A model's own [d, V] head is used as is; otherwise the cache makes (and owns) one.
  cache.head ??= model.headT ? null : tf.tidy(() => tf.clone(headMatrix(model)));
  const head = cache.head ?? model.headT!;
  const idsFlat = Int32Array.from(ids.flat());
  const posFlat = Int32Array.from(positions.flat());
  if (t === 1) {
    const logits = decodeStep(model, cache, head, idsFlat, posFlat);
    cache.length = S;
    return logits;
  }
  // Long prompts go through in chunks of PREFILL_CHUNK positions: activations stay
  // bounded (the heap plan counts one chunk) and the cache fills the same way.
  let logits: Float32Array | null = null;
  for (let c0 = 0; c0 < t; c0 += PREFILL_CHUNK) {
    const n = Math.min(PREFILL_CHUNK, t - c0);
    const pick = (flat: Int32Array): Int32Array =>
      Int32Array.from({ length: B * n }, (_, k) => flat[Math.floor(k / n) * t + c0 + (k % n)]!);
    logits = prefill(model, cache, head, pick(idsFlat), pick(posFlat), n);
    cache.length += n;
  }
  return logits!;
}

/** The general path of forwardWithCache for t new tokens per row (see there). */
function prefill(model: LlamaModel, cache: KvCache, head: tf.Tensor2D, ids: Int32Array, positions: Int32Array, t: number): Float32Array {
  const c = model.config;
  const B = cache.batchSize;
  const hd = c.headDim;
  const past = cache.length;
  const S = past + t;
  // bias [B, t, S]: new token i (slot past + i) sees valid slots ≤ its own, and itself.
  const bias = new Float32Array(B * t * S).fill(-1e9);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < t; i++) {
      const row = (b * t + i) * S;
      for (let j = 0; j <= past + i; j++) if (cache.valid[b * cache.maxLen + j] || j === past + i) bias[row + j] = 0;
    }
  }
  const { cos, sin } = ropeTables(c, positions);
  return readTensors(() => {
    const inp: LayerInput = {
      x: embedIds(model, ids),
      B,
      T: t,
      cos: tf.tensor4d(cos, [B, t, 1, hd]),
      sin: tf.tensor4d(sin, [B, t, 1, hd]),
    };
    const biasT = tf.tensor3d(bias, [B, t, S]);
    // Keys/values of all S slots: the new ones go into the cache first, then
    // (after earlier calls) the whole prefix comes back out as one tensor.
    const all = (buf: Float32Array, fresh: tf.Tensor4D): tf.Tensor4D => {
      writeSlots(cache, buf, hd, past, fresh.dataSync() as Float32Array);
      return past === 0 ? fresh : tf.tensor4d(readSlots(cache, buf, hd, 0, S), [B, c.numKeyValueHeads, S, hd]);
    };
    let x = inp.x;
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const xl = x;
      x = withLayer(model, l, () =>
        tf.tidy(() => {
          const hn = rmsNorm(xl, model.params.get(`model.layers.${l}.input_layernorm.weight`)!, c.rmsNormEps) as tf.Tensor2D;
          const { q, k, v } = qkv(model, l, hn, { ...inp, x: xl }, { training: false });
          return finishLayer(model, l, xl, attention(q, all(cache.k[l]!, k), all(cache.v[l]!, v), biasT), { training: false });
        }),
      );
    }
    // Last new position of each row: rows b·t + t − 1 of x [B·t, d].
    const last = tf.gather(
      x,
      tf.tensor1d(
        Int32Array.from({ length: B }, (_, b) => b * t + t - 1),
        'int32',
      ),
    );
    const h = rmsNorm(last, model.params.get('model.norm.weight')!, c.rmsNormEps) as tf.Tensor2D;
    return [tf.matMul(h, head)];
  })[0]!;
}
