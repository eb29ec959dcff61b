/**
 * Inference with a key/value cache for the generator: a prefill of many
 * tokens, then one token per call. Works on token ids only.
 */
import { tf } from './backend.js';
import { ChatsftError } from '../errors.js';
import { attention } from './ops.js';
import { embeddingTable, finishLayer, headMatrix, qkv, rmsNorm, ropeTables, type LayerInput } from './forward.js';
import type { LlamaModel } from './types.js';

export interface KvCache {
  batchSize: number;
  maxLen: number;
  /** Slots filled so far (the same for every row). */
  length: number;
  /** Per layer: [B, KV, length, hd]; null before the first call. */
  k: (tf.Tensor4D | null)[];
  v: (tf.Tensor4D | null)[];
  /** [B, maxLen]: 1 where a slot holds a real token (padding slots are never attended). */
  valid: Uint8Array;
  /**
   * The output matrix [d, V], made once per cache (weights do not change
   * while generating) instead of once per token; owned by the cache.
   */
  head: tf.Tensor2D | null;
}

export function createKvCache(model: LlamaModel, batchSize: number, maxLen: number): KvCache {
  const L = model.config.numHiddenLayers;
  return { batchSize, maxLen, length: 0, k: new Array<null>(L).fill(null), v: new Array<null>(L).fill(null), valid: new Uint8Array(batchSize * maxLen), head: null };
}

export function disposeKvCache(cache: KvCache): void {
  for (const t of [...cache.k, ...cache.v]) t?.dispose();
  cache.head?.dispose();
  cache.head = null;
  cache.k.fill(null);
  cache.v.fill(null);
  cache.length = 0;
}

/**
 * Run `ids` [B, t] (new tokens, same t for every row) at `positions` [B, t]
 * through the model, appending their keys/values to `cache`. `mask` [B, t]
 * (1 real, 0 padding; default all real) keeps left-padding out of attention.
 * Returns the logits of each row's last new position, [B, vocab] flat.
 */
export function forwardWithCache(model: LlamaModel, ids: number[][], cache: KvCache, positions: number[][], mask?: number[][]): Float32Array {
  const c = model.config;
  const B = cache.batchSize;
  const t = ids[0]?.length ?? 0;
  if (ids.length !== B || positions.length !== B || ids.some((r) => r.length !== t) || positions.some((r) => r.length !== t) || t === 0) {
    throw new ChatsftError('ENGINE_ERROR', `forwardWithCache: ids and positions must be [${B}, t] with t ≥ 1 equal across rows`);
  }
  const past = cache.length;
  const S = past + t;
  if (S > cache.maxLen) throw new ChatsftError('ENGINE_ERROR', `KV cache full: ${S} > maxLen ${cache.maxLen}`);
  for (let b = 0; b < B; b++) for (let i = 0; i < t; i++) cache.valid[b * cache.maxLen + past + i] = mask ? (mask[b]![i] ? 1 : 0) : 1;
  // bias [B, t, S]: new token i (slot past + i) sees valid slots ≤ its own, and itself.
  const bias = new Float32Array(B * t * S).fill(-1e9);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < t; i++) {
      const row = (b * t + i) * S;
      for (let j = 0; j <= past + i; j++) if (cache.valid[b * cache.maxLen + j] || j === past + i) bias[row + j] = 0;
    }
  }
  cache.head ??= tf.tidy(() => tf.clone(headMatrix(model)));
  const head = cache.head;
  const posFlat = Int32Array.from(positions.flat());
  const { cos, sin } = ropeTables(c, posFlat);
  const out = tf.tidy(() => {
    const emb = embeddingTable(model);
    const inp: LayerInput = {
      x: tf.gather(emb, tf.tensor1d(Int32Array.from(ids.flat()), 'int32')) as tf.Tensor2D,
      B,
      T: t,
      cos: tf.tensor4d(cos, [B, t, 1, c.headDim]),
      sin: tf.tensor4d(sin, [B, t, 1, c.headDim]),
    };
    const biasT = tf.tensor3d(bias, [B, t, S]);
    const ks: tf.Tensor4D[] = [];
    const vs: tf.Tensor4D[] = [];
    let x = inp.x;
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const hn = rmsNorm(x, model.params.get(`model.layers.${l}.input_layernorm.weight`)!, c.rmsNormEps) as tf.Tensor2D;
      const { q, k, v } = qkv(model, l, hn, { ...inp, x }, { training: false });
      const pk = cache.k[l];
      const pv = cache.v[l];
      const kk = pk ? (tf.concat([pk, k], 2) as tf.Tensor4D) : k;
      const vv = pv ? (tf.concat([pv, v], 2) as tf.Tensor4D) : v;
      ks.push(kk);
      vs.push(vv);
      x = finishLayer(model, l, x, attention(q, kk, vv, biasT), { training: false });
    }
    // Last new position of each row: rows b·t + t − 1 of x [B·t, d].
    const last = tf.gather(x, tf.tensor1d(Int32Array.from({ length: B }, (_, b) => b * t + t - 1), 'int32'));
    const h = rmsNorm(last, model.params.get('model.norm.weight')!, c.rmsNormEps) as tf.Tensor2D;
    return { logits: tf.matMul(h, head), ks, vs };
  });
  for (const old of [...cache.k, ...cache.v]) old?.dispose();
  cache.k = out.ks;
  cache.v = out.vs;
  cache.length = S;
  const logits = out.logits.dataSync() as Float32Array;
  out.logits.dispose();
  return Float32Array.from(logits);
}
