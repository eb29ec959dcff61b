/**
 * The decoder forward pass and the causal-LM loss on a collated Batch.
 * Everything that allocates runs inside the caller's tf.tidy.
 */
import { tf } from './backend.js';
import type { Batch } from '../batch/types.js';
import { IGNORE_INDEX } from '../batch/types.js';
import type { LlamaConfig } from '../hf/config.js';
import { attention, constMatMul, custom, gatherRows, headLoss, headLossWithGrad, linear, linearFrozen } from './ops.js';
import { hostRows, param, paramT, withLayer } from './weights.js';
import type { ForwardOptions, LlamaModel } from './types.js';
import { loraDelta } from './lora.js';

/**
 * Rows of [chunk, vocab] logits alive at once in the loss: about 8 M floats
 * (32 MiB) per [chunk, vocab] tensor, e.g. 256 rows at vocab 32 k, 55 at 152 k.
 */
export function lossChunk(vocab: number): number {
  return Math.max(16, Math.min(512, Math.floor(2 ** 23 / vocab)));
}
/** Additive mask value; finite so fully-masked (padding) rows stay NaN-free. */
const NEG = -1e9;

/** Rotary inverse frequencies [headDim/2], with Llama 3 scaling when configured. */
export function ropeInvFreq(c: LlamaConfig): Float64Array {
  const half = c.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
  const rs = c.ropeScaling;
  if (rs) {
    const lowWl = rs.originalMaxPositionEmbeddings / rs.lowFreqFactor;
    const highWl = rs.originalMaxPositionEmbeddings / rs.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wl = (2 * Math.PI) / inv[i]!;
      if (wl > lowWl) inv[i] = inv[i]! / rs.factor;
      else if (wl >= highWl) {
        const smooth = (rs.originalMaxPositionEmbeddings / wl - rs.lowFreqFactor) / (rs.highFreqFactor - rs.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i]! / rs.factor) + smooth * inv[i]!;
      }
    }
  }
  return inv;
}

/** cos/sin tables [N, headDim] for the given positions (HF: cat(freqs, freqs)). */
export function ropeTables(c: LlamaConfig, positions: Int32Array): { cos: Float32Array; sin: Float32Array } {
  const inv = ropeInvFreq(c);
  const hd = c.headDim;
  const half = hd / 2;
  const cos = new Float32Array(positions.length * hd);
  const sin = new Float32Array(positions.length * hd);
  for (let n = 0; n < positions.length; n++) {
    const p = positions[n]!;
    for (let i = 0; i < half; i++) {
      // HF computes position × inv_freq in f32; Math.fround keeps that rounding.
      const a = Math.fround(p * Math.fround(inv[i]!));
      const cv = Math.cos(a);
      const sv = Math.sin(a);
      cos[n * hd + i] = cv;
      cos[n * hd + i + half] = cv;
      sin[n * hd + i] = sv;
      sin[n * hd + i + half] = sv;
    }
  }
  return { cos, sin };
}

/**
 * Additive attention bias [B, T, T]: token i sees token j iff j ≤ i and both
 * lie in the same non-zero segment. Padding (segment 0) sees only itself.
 */
export function attentionBias(batch: Batch): Float32Array {
  const { batchSize: B, seqLen: T, segmentIds } = batch;
  const bias = new Float32Array(B * T * T).fill(NEG);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      const si = segmentIds[b * T + i]!;
      const row = (b * T + i) * T;
      if (si === 0) {
        bias[row + i] = 0;
        continue;
      }
      for (let j = 0; j <= i; j++) if (segmentIds[b * T + j] === si) bias[row + j] = 0;
    }
  }
  return bias;
}

export function rmsNorm(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  const variance = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(variance, eps))), w);
}

/**
 * HF rotate_half on the last axis, cat(−x2, x1), as x @ R with R the signed
 * permutation [hd, hd]: R[j + half, j] = −1, R[j, j + half] = 1.
 */
function rotateHalf(x: tf.Tensor): tf.Tensor {
  const hd = x.shape[x.rank - 1]!;
  const half = hd / 2;
  const r = new Float32Array(hd * hd);
  for (let j = 0; j < half; j++) {
    r[(j + half) * hd + j] = -1;
    r[j * hd + j + half] = 1;
  }
  const R = tf.tensor2d(r, [hd, hd]);
  const y = constMatMul(tf.reshape(x, [-1, hd]) as tf.Tensor2D, R, tf.transpose(R));
  return tf.reshape(y, x.shape);
}

/** Applies rotary embeddings to x [B, T, heads, hd] with cos/sin [B, T, 1, hd]. */
function rope(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  return tf.add(tf.mul(x, cos), tf.mul(rotateHalf(x), sin));
}

/**
 * x [N, in] @ the weights of `names` side by side. Base weights are frozen
 * under LoRA and when they come from host memory: their product has no
 * weight gradient then (linearFrozen).
 */
function baseProduct(model: LlamaModel, names: string[], x: tf.Tensor2D): tf.Tensor2D {
  const ws = names.map((n) => param(model, `${n}.weight`) as tf.Tensor2D);
  const w = ws.length === 1 ? ws[0]! : (tf.concat(ws, 1) as tf.Tensor2D);
  const frozen = model.lora !== null || names.some((n) => paramT(model, `${n}.weight`) !== null);
  if (!frozen) return linear(x, w);
  const wTs = names.map((n) => paramT(model, `${n}.weight`));
  const wT = wTs.every((t) => t !== null) ? (wTs.length === 1 ? wTs[0]! : (tf.concat(wTs as tf.Tensor2D[], 0) as tf.Tensor2D)) : null;
  return linearFrozen(x, w, wT);
}

/** A projection `name` (module path) on x [N, in] → [N, out], with bias and LoRA. */
export function project(model: LlamaModel, name: string, x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
  return projectMany(model, [name], x, opts)[0]!;
}

/**
 * Several projections of the same input as one product: x @ [W1 | W2 | …]
 * (one kernel, one xᵀ in the backward instead of one per projection), then
 * split; biases and LoRA deltas are added per projection.
 */
export function projectMany(model: LlamaModel, names: string[], x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D[] {
  // Without a backward pass or a weight gradient, one product per weight: XNNPACK packs each
  // weight once and caches it, where a concatenation is a new tensor to copy and re-pack on
  // every call (measured: most of a LoRA step on the SmolLM2-135M shape).
  const frozen = model.lora !== null || names.some((n) => paramT(model, `${n}.weight`) !== null);
  const parts =
    !opts.training || frozen
      ? names.map((n) => baseProduct(model, [n], x))
      : names.length === 1
        ? [baseProduct(model, names, x)]
        : (tf.split(
            baseProduct(model, names, x),
            names.map((n) => param(model, `${n}.weight`).shape[1]!),
            1,
          ) as tf.Tensor2D[]);
  return parts.map((part, i) => {
    let out = part;
    const bias = model.params.get(`${names[i]!}.bias`);
    if (bias) out = tf.add(out, bias);
    const d = loraDelta(model, names[i]!, x, opts);
    return d ? tf.add(out, d) : out;
  });
}

/**
 * Embeddings of `ids` [N] → [N, d]: rows gathered on the host when the table
 * stays in host memory (frozen, no trained rows), else from the heap table.
 */
export function embedIds(model: LlamaModel, ids: Int32Array): tf.Tensor2D {
  const host = model.host?.get('model.embed_tokens.weight');
  if (!host) return gatherRows(embeddingTable(model), tf.tensor1d(ids, 'int32'));
  const d = model.config.hiddenSize;
  const out = new Float32Array(ids.length * d);
  ids.forEach((id, n) => out.set(hostRows(host, id, 1), n * d));
  return tf.tensor2d(out, [ids.length, d]);
}

/** Embedding table [V, d] including trained LoRA rows. */
export function embeddingTable(model: LlamaModel): tf.Tensor2D {
  const e = model.params.get('model.embed_tokens.weight')! as tf.Tensor as tf.Tensor2D;
  const lora = model.lora;
  if (!lora || !lora.embedDelta) return e;
  return addRows(e, lora.embedRows, lora.embedDelta);
}

/** table [V, d] + delta [k, d] scattered into `rows`; differentiable in delta. */
function addRows(e: tf.Tensor2D, rowIds: Int32Array, delta: tf.Tensor): tf.Tensor2D {
  const rows = tf.tensor2d(rowIds, [rowIds.length, 1], 'int32');
  // ScatterNd's gradient is not registered on wasm; gathering dy's rows is it.
  const scatter = custom<tf.Tensor2D>(([d], save) => {
    save([rows]);
    return {
      value: tf.scatterND(rows, d!, e.shape),
      gradFunc: (dy, saved) => [tf.gather(dy, tf.reshape(saved[0]!, [-1]))],
    };
  });
  return tf.add(e, scatter(delta)) as tf.Tensor2D;
}

export interface LayerInput {
  /** [B·T, d] hidden states. */
  x: tf.Tensor2D;
  B: number;
  T: number;
  /** [B, T, 1, hd] rotary tables. */
  cos: tf.Tensor;
  sin: tf.Tensor;
}

/**
 * q, k, v of one layer, after bias, q/k norm and RoPE:
 * q [B, H, T, hd], k/v [B, KV, T, hd].
 */
export function qkv(
  model: LlamaModel,
  l: number,
  hn: tf.Tensor2D,
  inp: LayerInput,
  opts: ForwardOptions,
): { q: tf.Tensor4D; k: tf.Tensor4D; v: tf.Tensor4D } {
  const c = model.config;
  const { B, T } = inp;
  const p = `model.layers.${l}.self_attn`;
  const [qp, kp, vp] = projectMany(model, [`${p}.q_proj`, `${p}.k_proj`, `${p}.v_proj`], hn, opts) as [
    tf.Tensor2D,
    tf.Tensor2D,
    tf.Tensor2D,
  ];
  let q: tf.Tensor = tf.reshape(qp, [B, T, c.numAttentionHeads, c.headDim]);
  let k: tf.Tensor = tf.reshape(kp, [B, T, c.numKeyValueHeads, c.headDim]);
  const v = tf.reshape(vp, [B, T, c.numKeyValueHeads, c.headDim]);
  if (c.qkNorm) {
    q = rmsNorm(q, model.params.get(`${p}.q_norm.weight`)!, c.rmsNormEps);
    k = rmsNorm(k, model.params.get(`${p}.k_norm.weight`)!, c.rmsNormEps);
  }
  q = rope(q, inp.cos, inp.sin);
  k = rope(k, inp.cos, inp.sin);
  const perm = [0, 2, 1, 3];
  return { q: tf.transpose(q, perm) as tf.Tensor4D, k: tf.transpose(k, perm) as tf.Tensor4D, v: tf.transpose(v, perm) as tf.Tensor4D };
}

/** Attention output [B, H, T, hd] → o_proj, plus the MLP block; returns the new residual [B·T, d]. */
export function finishLayer(model: LlamaModel, l: number, x: tf.Tensor2D, attn: tf.Tensor4D, opts: ForwardOptions): tf.Tensor2D {
  const c = model.config;
  const [B, H, T, hd] = attn.shape;
  const p = `model.layers.${l}`;
  const merged = tf.reshape(tf.transpose(attn, [0, 2, 1, 3]), [B * T, H * hd]) as tf.Tensor2D;
  const h = tf.add(x, project(model, `${p}.self_attn.o_proj`, merged, opts)) as tf.Tensor2D;
  const hn = rmsNorm(h, model.params.get(`${p}.post_attention_layernorm.weight`)!, c.rmsNormEps) as tf.Tensor2D;
  const [g, u] = projectMany(model, [`${p}.mlp.gate_proj`, `${p}.mlp.up_proj`], hn, opts) as [tf.Tensor2D, tf.Tensor2D];
  const act = tf.mul(tf.mul(g, tf.sigmoid(g)), u) as tf.Tensor2D; // SwiGLU: silu(gate) ⊙ up
  return tf.add(h, project(model, `${p}.mlp.down_proj`, act, opts)) as tf.Tensor2D;
}

/** Final-norm hidden states [B·T, d] for a batch. */
export function hiddenStates(model: LlamaModel, batch: Batch, opts: ForwardOptions): tf.Tensor2D {
  const c = model.config;
  const { batchSize: B, seqLen: T } = batch;
  const { cos, sin } = ropeTables(c, batch.positionIds);
  const inp: LayerInput = {
    x: embedIds(model, batch.inputIds),
    B,
    T,
    cos: tf.tensor4d(cos, [B, T, 1, c.headDim]),
    sin: tf.tensor4d(sin, [B, T, 1, c.headDim]),
  };
  const bias = tf.tensor3d(attentionBias(batch), [B, T, T]);
  let x = inp.x;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const xl = x;
    // Inference frees each layer's intermediates (and their packed copies) as it goes.
    x = withLayer(model, l, () =>
      opts.training ? decoderLayer(model, l, xl, inp, bias, opts) : tf.tidy(() => decoderLayer(model, l, xl, inp, bias, opts)),
    );
  }
  return rmsNorm(x, model.params.get('model.norm.weight')!, c.rmsNormEps) as tf.Tensor2D;
}

/** Rotary tables and the attention bias of a batch, as tensors (caller disposes). */
export function batchInputs(model: LlamaModel, batch: Batch): { cos: tf.Tensor4D; sin: tf.Tensor4D; bias: tf.Tensor3D } {
  const { batchSize: B, seqLen: T } = batch;
  const { cos, sin } = ropeTables(model.config, batch.positionIds);
  return {
    cos: tf.tensor4d(cos, [B, T, 1, model.config.headDim]),
    sin: tf.tensor4d(sin, [B, T, 1, model.config.headDim]),
    bias: tf.tensor3d(attentionBias(batch), [B, T, T]),
  };
}

/** One decoder layer: x [B·T, d] → x [B·T, d] (its weights must be loaded: withLayer). */
export function decoderLayer(
  model: LlamaModel,
  l: number,
  x: tf.Tensor2D,
  inp: Omit<LayerInput, 'x'>,
  bias: tf.Tensor3D,
  opts: ForwardOptions,
): tf.Tensor2D {
  const hn = rmsNorm(x, model.params.get(`model.layers.${l}.input_layernorm.weight`)!, model.config.rmsNormEps) as tf.Tensor2D;
  const { q, k, v } = qkv(model, l, hn, { ...inp, x }, opts);
  return finishLayer(model, l, x, attention(q, k, v, bias), opts);
}

/**
 * The supervised positions of a batch under HF causal-LM shifting: row
 * b·T + t is scored against labels[b, t+1] when that label is not -100 and
 * both tokens lie in the same non-zero segment.
 */
export function supervisedTargets(batch: Batch): { rows: Int32Array; targets: Int32Array } {
  const { batchSize: B, seqLen: T, labels, segmentIds } = batch;
  const rows: number[] = [];
  const targets: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const i = b * T + t;
      const y = labels[i + 1]!;
      if (y === IGNORE_INDEX) continue;
      const s = segmentIds[i + 1]!;
      if (s === 0 || segmentIds[i] !== s) continue;
      rows.push(i);
      targets.push(y);
    }
  }
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/** Number of supervised tokens of a batch (the loss normaliser). */
export function countSupervised(batch: Batch): number {
  return supervisedTargets(batch).rows.length;
}

/** Head weight as [d, V] and [V, d]. */
/**
 * The output matrix alone, [d, V]: what inference and eval need. Avoids the
 * [V, d] transpose `headWeights` also makes for the backward pass, which cost
 * 70 of 95 ms per decoded token on a 32 k vocabulary.
 */
export function headMatrix(model: LlamaModel, emb?: tf.Tensor2D): tf.Tensor2D {
  if (model.headT) return model.headT;
  const head = model.params.get('lm_head.weight');
  if (head && model.lora?.headDelta) return headWeights(model, emb).w;
  if (head) return head as tf.Tensor as tf.Tensor2D;
  return tf.transpose(emb ?? embeddingTable(model)) as tf.Tensor2D;
}

/** Whether the head receives a gradient: full fine-tuning, or LoRA's trained token rows (never a frozen headT). */
export function headTrainable(model: LlamaModel): boolean {
  if (model.headT) return false;
  return !model.lora || model.lora.embedDelta !== null || model.lora.headDelta !== null;
}

export function headWeights(model: LlamaModel, emb?: tf.Tensor2D): { w: tf.Tensor2D; wT: tf.Tensor2D | null } {
  // Frozen [d, V] head: no transposed copy (headLossWithGrad makes dh without it).
  if (model.headT) return { w: model.headT, wT: null };
  const head = model.params.get('lm_head.weight');
  const lora = model.lora;
  if (head && lora?.headDelta) {
    const wT = addRows(tf.transpose(head) as tf.Tensor2D, lora.embedRows, lora.headDelta);
    return { w: tf.transpose(wT), wT };
  }
  if (head) return { w: head as tf.Tensor as tf.Tensor2D, wT: tf.transpose(head) as tf.Tensor2D };
  const e = emb ?? embeddingTable(model);
  return { w: tf.transpose(e) as tf.Tensor2D, wT: e };
}

/**
 * Summed cross-entropy × `scale` over the supervised tokens of `batch`, as a
 * differentiable scalar (call inside tf.variableGrads). Returns the count
 * too; the trainer passes scale = 1 / (supervised tokens of the whole step).
 */
export function lossForGrad(model: LlamaModel, batch: Batch, scale: number, opts: ForwardOptions): { loss: tf.Scalar; count: number } {
  const { rows, targets } = supervisedTargets(batch);
  const h = hiddenStates(model, batch, opts);
  if (rows.length === 0) return { loss: tf.mul(tf.sum(h), 0) as tf.Scalar, count: 0 };
  const hs = gatherRows(h, tf.tensor1d(rows, 'int32')); // [M, d]
  const { w, wT } = headWeights(model);
  return {
    loss: tf.mul(headLossWithGrad(hs, w, wT, targets, lossChunk(model.config.vocabSize), headTrainable(model)), scale) as tf.Scalar,
    count: rows.length,
  };
}

/** Summed cross-entropy and supervised count, no gradients (eval). */
export function evalLoss(model: LlamaModel, batch: Batch): { sum: number; count: number } {
  return tf.tidy(() => {
    const { rows, targets } = supervisedTargets(batch);
    if (rows.length === 0) return { sum: 0, count: 0 };
    const h = hiddenStates(model, batch, { training: false });
    const hs = tf.gather(h, tf.tensor1d(rows, 'int32')) as tf.Tensor2D;
    return { sum: headLoss(hs, headMatrix(model), targets, lossChunk(model.config.vocabSize)), count: rows.length };
  });
}

/** Full logits [B, T, V] (tests and small models only). */
export function logits(model: LlamaModel, batch: Batch): Float32Array {
  return tf.tidy(() => tf.matMul(hiddenStates(model, batch, { training: false }), headMatrix(model)).dataSync() as Float32Array);
}
