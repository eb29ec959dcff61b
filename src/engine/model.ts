/**
 * Model parameters: creation (seeded init), loading from and exporting to
 * Hugging Face safetensors names, embedding resize. The forward pass is in
 * forward.ts.
 */
import fs from 'node:fs';
import { writeJsonAtomic } from '../util/atomic.js';
import path from 'node:path';
import { tf, variableFrom } from './backend.js';
import { ChatsftError } from '../errors.js';
import { type LlamaConfig, readLlamaConfig, toHfConfig } from '../hf/config.js';
import { familyOf } from '../hf/families.js';
import { Rng } from './rng.js';
import {
  isFloatDtype,
  numelOf,
  openWeights,
  readF32,
  readRaw,
  u16View,
  writeSafetensorsStream,
  type StEntry,
  type StTensor,
  type WeightIndex,
  type WriteDtype,
} from '../hf/safetensors.js';
import type { HostTensor, LlamaModel } from './types.js';
import { hostF32, resizeHostRows } from './weights.js';

export type { LlamaModel } from './types.js';

/** Linear weights are stored [in, out] internally (see LlamaModel). */
export function isLinearWeight(name: string): boolean {
  return name.endsWith('_proj.weight') || name === 'lm_head.weight';
}

/** Every parameter with its HF shape ([out, in] for linear weights), in canonical order. */
export function expectedShapes(c: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const d = c.hiddenSize;
  const qd = c.numAttentionHeads * c.headDim;
  const kvd = c.numKeyValueHeads * c.headDim;
  m.set('model.embed_tokens.weight', [c.vocabSize, d]);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    m.set(`${p}.input_layernorm.weight`, [d]);
    m.set(`${p}.self_attn.q_proj.weight`, [qd, d]);
    m.set(`${p}.self_attn.k_proj.weight`, [kvd, d]);
    m.set(`${p}.self_attn.v_proj.weight`, [kvd, d]);
    if (c.attentionBias) {
      m.set(`${p}.self_attn.q_proj.bias`, [qd]);
      m.set(`${p}.self_attn.k_proj.bias`, [kvd]);
      m.set(`${p}.self_attn.v_proj.bias`, [kvd]);
    }
    if (c.qkNorm) {
      m.set(`${p}.self_attn.q_norm.weight`, [c.headDim]);
      m.set(`${p}.self_attn.k_norm.weight`, [c.headDim]);
    }
    m.set(`${p}.self_attn.o_proj.weight`, [d, qd]);
    // Llama/Qwen3 `attention_bias` also puts a bias on o_proj; Qwen2 never does (hf/families.ts).
    if (c.attentionBias && familyOf(c.modelType).oProjBias) m.set(`${p}.self_attn.o_proj.bias`, [d]);
    m.set(`${p}.post_attention_layernorm.weight`, [d]);
    m.set(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, d]);
    m.set(`${p}.mlp.up_proj.weight`, [c.intermediateSize, d]);
    m.set(`${p}.mlp.down_proj.weight`, [d, c.intermediateSize]);
  }
  m.set('model.norm.weight', [d]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, d]);
  return m;
}

/** [rows, cols] → [cols, rows] on plain arrays. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c]!;
  }
  return out;
}

function makeVariable(name: string, hfShape: number[], data: Float32Array, varName: string): tf.Variable {
  // tf.variable copies its initial value: dispose the temporary.
  const init = isLinearWeight(name)
    ? tf.tensor2d(transpose2d(data, hfShape[0]!, hfShape[1]!), [hfShape[1]!, hfShape[0]!])
    : tf.tensor(data, hfShape);
  return variableFrom(init, true, varName);
}

let modelCounter = 0;

/**
 * A fresh model: weights ~ N(0, initializer_range) as in HF's `_init_weights`,
 * norms 1, biases 0, from a seeded PRNG (same seed, same weights).
 */
/** A fresh model's weights: N(0, initializer_range) in expectedShapes order from Rng(seed), norms 1, biases 0. */
export function initialTensors(config: LlamaConfig, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = new Rng(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) data = new Float32Array(n).fill(1);
    else if (name.endsWith('.bias')) data = new Float32Array(n);
    else data = rng.fillNormal(new Float32Array(n), config.initializerRange);
    out.set(name, { shape, data });
  }
  return out;
}

export function createModel(config: LlamaConfig, seed: number): LlamaModel {
  const params = new Map<string, tf.Variable>();
  const id = modelCounter++;
  for (const [name, { shape, data }] of initialTensors(config, seed)) params.set(name, makeVariableNamed(name, shape, data, id));
  return { config, params, lora: null };
}

// tfjs variable names are global per engine: suffix them per model instance.
function makeVariableNamed(name: string, shape: number[], data: Float32Array, id: number): tf.Variable {
  return makeVariable(name, shape, data, `${name}#${id}`);
}

/** Build a model from HF-named tensors, checking names and shapes against the config. */
export function modelFromTensors(
  config: LlamaConfig,
  tensors: Map<string, StTensor | { shape: number[]; data: Float32Array }>,
  where: string,
): LlamaModel {
  const expected = expectedShapes(config);
  const params = new Map<string, tf.Variable>();
  const id = modelCounter++;
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) {
      problems.push(`missing tensor '${name}' [${shape.join(', ')}]`);
      continue;
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      problems.push(`tensor '${name}' has shape [${t.shape.join(', ')}], config needs [${shape.join(', ')}]`);
    }
  }
  if (problems.length > 0)
    throw new ChatsftError(
      'MODEL_INVALID',
      problems.slice(0, 10).join('; ') + (problems.length > 10 ? `; … ${problems.length - 10} more` : ''),
      where,
    );
  for (const [name, shape] of expected) params.set(name, makeVariableNamed(name, shape, tensors.get(name)!.data, id));
  return { config, params, lora: null };
}

export interface LoadOptions {
  /** Tensors the config does not use are ignored instead of refused. */
  allowExtraTensors?: boolean;
  /**
   * Layers (the last ones) whose projection matrices stay in host memory in
   * their stored dtype instead of the wasm heap (see weights.ts). Default 0.
   */
  hostLayers?: number;
  /**
   * Keep the embedding table in host memory (rows gathered there) and put
   * only a frozen [d, V] output matrix in the heap (model.headT). For
   * inference and LoRA without trained token rows.
   */
  hostEmbedding?: boolean;
  /** Build the frozen [d, V] output matrix once (model.headT): inference, LoRA without trained token rows. */
  frozenHead?: boolean;
  /** Keep host layer matrices as f32 (decoding reads them directly, 2× the host memory of bf16). */
  hostF32?: boolean;
  /** Called after each tensor with bytes read so far and the total. */
  onProgress?: (bytes: number, total: number) => void;
}

/** Tensors a checkpoint may carry that no config describes and that are safely dropped. */
function harmlessExtra(name: string, c: LlamaConfig): boolean {
  // Rotary caches of old exports; tied checkpoints that still store lm_head.weight.
  return name.endsWith('rotary_emb.inv_freq') || (name === 'lm_head.weight' && c.tieWordEmbeddings);
}

/**
 * Strict check of a folder's weights against its config: every expected
 * tensor present with its shape and a float dtype; nothing unknown (unless
 * allowed), with the layer count compared first since it is the usual cause.
 */
export function checkWeights(config: LlamaConfig, index: WeightIndex, where: string, allowExtra = false): void {
  const expected = expectedShapes(config);
  const problems: string[] = [];
  let maxLayer = -1;
  for (const name of index.entries.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) maxLayer = Math.max(maxLayer, Number(m[1]));
  }
  if (maxLayer + 1 !== config.numHiddenLayers && maxLayer >= 0) {
    problems.push(`the weights have ${maxLayer + 1} decoder layers but config.json says num_hidden_layers ${config.numHiddenLayers}`);
  }
  for (const [name, shape] of expected) {
    const e = index.entries.get(name);
    if (!e) {
      problems.push(`missing tensor '${name}' [${shape.join(', ')}]`);
      continue;
    }
    if (!isFloatDtype(e.dtype))
      problems.push(`tensor '${name}' is ${e.dtype}: weights must be F32, F16 or BF16 (quantized or integer weights are not supported)`);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      problems.push(`tensor '${name}' has shape [${e.shape.join(', ')}], config needs [${shape.join(', ')}]`);
    }
  }
  const extra = [...index.entries.keys()].filter((n) => !expected.has(n) && !harmlessExtra(n, config));
  if (extra.length > 0 && !allowExtra) {
    problems.push(
      `${extra.length} tensor(s) the config does not use: ${extra
        .slice(0, 5)
        .map((n) => `'${n}'`)
        .join(', ')}${extra.length > 5 ? ', …' : ''} (pass --allow-extra-tensors to ignore them)`,
    );
  }
  if (problems.length > 0)
    throw new ChatsftError(
      'MODEL_INVALID',
      problems.slice(0, 10).join('; ') + (problems.length > 10 ? `; … ${problems.length - 10} more` : ''),
      where,
    );
}

/** A stored tensor kept as is in host memory (F64 becomes F32). */
function hostTensor(e: StEntry, f32 = false): HostTensor {
  if (f32) return { dtype: 'F32', shape: e.shape, data: readF32(e) };
  const raw = readRaw(e);
  if (e.dtype === 'BF16' || e.dtype === 'F16') return { dtype: e.dtype, shape: e.shape, data: u16View(raw) };
  return { dtype: 'F32', shape: e.shape, data: readF32(e) };
}

/**
 * Load `config.json` + safetensors weights (single, sharded with an index,
 * F32/F16/BF16) from a Hugging Face model folder, one tensor at a time.
 */
export function loadModel(dir: string, opts: LoadOptions = {}): LlamaModel {
  const config = readLlamaConfig(path.join(dir, 'config.json'));
  const index = openWeights(dir);
  checkWeights(config, index, dir, opts.allowExtraTensors);
  const hostFrom = config.numHiddenLayers - Math.max(0, Math.min(config.numHiddenLayers, opts.hostLayers ?? 0));
  const params = new Map<string, tf.Variable>();
  const host = new Map<string, HostTensor>();
  const id = modelCounter++;
  let done = 0;
  try {
    for (const [name, shape] of expectedShapes(config)) {
      const e = index.entries.get(name)!;
      const m = /^model\.layers\.(\d+)\./.exec(name);
      if (m && Number(m[1]) >= hostFrom && isLinearWeight(name)) host.set(name, hostTensor(e, opts.hostF32));
      else if (opts.hostEmbedding && name === 'model.embed_tokens.weight') host.set(name, hostTensor(e));
      else params.set(name, makeVariableNamed(name, shape, readF32(e), id));
      done += e.bytes;
      opts.onProgress?.(done, index.totalBytes);
    }
  } catch (e) {
    for (const v of params.values()) v.dispose();
    throw e;
  }
  const model: LlamaModel = { config, params, lora: null, ...(host.size > 0 ? { host } : {}) };
  if (opts.hostEmbedding || opts.frozenHead) {
    // Tied: the head is the table's transpose, made once on the host; untied: lm_head is already [d, V].
    const table = host.get('model.embed_tokens.weight');
    model.headT = !config.tieWordEmbeddings
      ? (params.get('lm_head.weight')! as tf.Tensor as tf.Tensor2D)
      : table
        ? tf.tensor2d(transpose2d(hostF32(table), config.vocabSize, config.hiddenSize), [config.hiddenSize, config.vocabSize])
        : (tf.transpose(params.get('model.embed_tokens.weight')!) as tf.Tensor2D);
  }
  return model;
}

/** The stored dtype of a folder's weights ('BF16' when any matrix is), for saving in kind. */
export function storedDtype(dir: string): WriteDtype {
  const dts = new Set([...openWeights(dir).entries.values()].map((e) => e.dtype));
  return dts.has('BF16') ? 'BF16' : dts.has('F16') ? 'F16' : 'F32';
}

/** One parameter in HF layout ([out, in] for linear weights) as f32, read from the heap or host memory. */
export function hfTensor(model: LlamaModel, name: string): Float32Array {
  const h = model.host?.get(name);
  if (h) return hostF32(h);
  const v = model.params.get(name);
  if (!v) throw new ChatsftError('ENGINE_ERROR', `model has no tensor '${name}'`);
  // dataSync outside any tidy: tidy walks returned arrays element by element.
  const data = v.dataSync() as Float32Array;
  if (!isLinearWeight(name)) return Float32Array.from(data);
  const [i, o] = v.shape as [number, number];
  return transpose2d(data, i, o);
}

/** Parameters in HF layout ([out, in] linear weights), LoRA not merged (small models; saving streams). */
export function exportTensors(model: LlamaModel): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedShapes(model.config)) out.set(name, { shape, data: hfTensor(model, name) });
  return out;
}

/**
 * Write `model.safetensors` and `config.json` (atomic) into `dir`, one
 * tensor at a time: `tensor(name)` gives each HF-layout tensor (default:
 * the model's own, LoRA not merged), so peak memory is the largest tensor.
 */
export function saveModel(
  model: LlamaModel,
  dir: string,
  tensors: Map<string, { shape: number[]; data: Float32Array }> | ((name: string) => Float32Array) = (n) => hfTensor(model, n),
  opts: { dtype?: WriteDtype } = {},
): void {
  fs.mkdirSync(dir, { recursive: true });
  const dtype = opts.dtype ?? 'F32';
  const get = typeof tensors === 'function' ? tensors : (n: string) => tensors.get(n)!.data;
  const specs = [...expectedShapes(model.config)].map(([name, shape]) => ({ name, shape, dtype }));
  writeSafetensorsStream(path.join(dir, 'model.safetensors'), specs, (s) => get(s.name), { format: 'pt' });
  const cfg = toHfConfig(model.config);
  cfg['torch_dtype'] = dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
  writeJsonAtomic(path.join(dir, 'config.json'), cfg);
}

export function disposeModel(model: LlamaModel): void {
  for (const v of model.params.values()) v.dispose();
  model.host?.clear();
  if (model.headT && model.config.tieWordEmbeddings) model.headT.dispose();
  model.headT = undefined;
  if (model.lora) {
    for (const v of model.lora.a.values()) v.dispose();
    for (const v of model.lora.b.values()) v.dispose();
    model.lora.embedDelta?.dispose();
    model.lora.headDelta?.dispose();
  }
  model.params.clear();
}

export function countParameters(model: LlamaModel): number {
  let n = 0;
  for (const v of model.params.values()) n += v.size;
  for (const h of model.host?.values() ?? []) n += numelOf(h.shape);
  return n;
}

/**
 * Grow (or shrink) the vocabulary to `newVocab`: new embedding rows (and
 * new head columns, when untied) are the mean of the existing ones, as
 * transformers' `resize_token_embeddings(mean_resizing=True)` does. A table
 * kept in host memory is resized there, in its stored dtype, and a frozen
 * [d, V] head (model.headT) is rebuilt from the resized weights, so neither
 * falls back into the wasm heap.
 */
export function resizeTokenEmbeddings(model: LlamaModel, newVocab: number): void {
  const c = model.config;
  if (model.lora) throw new ChatsftError('ENGINE_ERROR', 'resize embeddings before adding LoRA');
  if (newVocab === c.vocabSize) return;
  const resizeRows = (t: tf.Tensor2D): tf.Tensor2D =>
    tf.tidy(() => {
      const old = t.shape[0];
      if (newVocab < old) return tf.slice(t, [0, 0], [newVocab, t.shape[1]]);
      const mean = tf.mean(t, 0, true);
      return tf.concat([t, tf.tile(mean, [newVocab - old, 1])], 0) as tf.Tensor2D;
    });
  const id = modelCounter++;
  const hostTable = model.host?.get('model.embed_tokens.weight');
  if (hostTable) {
    model.host!.set('model.embed_tokens.weight', resizeHostRows(hostTable, newVocab));
  } else {
    const emb = model.params.get('model.embed_tokens.weight')!;
    const newEmb = resizeRows(emb as tf.Tensor as tf.Tensor2D);
    model.params.set('model.embed_tokens.weight', variableFrom(newEmb, true, `model.embed_tokens.weight#${id}`));
    emb.dispose();
  }
  const head = model.params.get('lm_head.weight');
  if (head) {
    // Stored [d, V]: resize the columns.
    const newHead = tf.tidy(() => tf.transpose(resizeRows(tf.transpose(head as tf.Tensor as tf.Tensor2D))));
    model.params.set('lm_head.weight', variableFrom(newHead, true, `lm_head.weight#${id}`));
    head.dispose();
  }
  c.vocabSize = newVocab;
  c.raw['vocab_size'] = newVocab;
  if (model.headT) {
    // Untied: headT is lm_head itself (just replaced); tied: its own [d, V] copy of the table, rebuilt as loadModel does.
    if (c.tieWordEmbeddings) model.headT.dispose();
    const table = model.host?.get('model.embed_tokens.weight');
    model.headT = !c.tieWordEmbeddings
      ? (model.params.get('lm_head.weight')! as tf.Tensor as tf.Tensor2D)
      : table
        ? tf.tensor2d(transpose2d(hostF32(table), newVocab, c.hiddenSize), [c.hiddenSize, newVocab])
        : (tf.transpose(model.params.get('model.embed_tokens.weight')!) as tf.Tensor2D);
  }
}
