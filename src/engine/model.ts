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
import { Rng } from './rng.js';
import { readSafetensorsDir, writeSafetensors, type StTensor } from './safetensors.js';
import type { LlamaModel } from './types.js';

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
    // Llama/Qwen3 `attention_bias` also puts a bias on o_proj; Qwen2 never does.
    if (c.attentionBias && c.modelType !== 'qwen2') m.set(`${p}.self_attn.o_proj.bias`, [d]);
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
export function createModel(config: LlamaConfig, seed: number): LlamaModel {
  const rng = new Rng(seed);
  const params = new Map<string, tf.Variable>();
  const id = modelCounter++;
  for (const [name, shape] of expectedShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) data = new Float32Array(n).fill(1);
    else if (name.endsWith('.bias')) data = new Float32Array(n);
    else data = rng.fillNormal(new Float32Array(n), config.initializerRange);
    params.set(name, makeVariableNamed(name, shape, data, id));
  }
  return { config, params, lora: null };
}

// tfjs variable names are global per engine: suffix them per model instance.
function makeVariableNamed(name: string, shape: number[], data: Float32Array, id: number): tf.Variable {
  return makeVariable(name, shape, data, `${name}#${id}`);
}

/** Build a model from HF-named tensors, checking names and shapes against the config. */
export function modelFromTensors(config: LlamaConfig, tensors: Map<string, StTensor | { shape: number[]; data: Float32Array }>, where: string): LlamaModel {
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
  if (problems.length > 0) throw new ChatsftError('MODEL_INVALID', problems.slice(0, 10).join('; ') + (problems.length > 10 ? `; … ${problems.length - 10} more` : ''), where);
  for (const [name, shape] of expected) params.set(name, makeVariableNamed(name, shape, tensors.get(name)!.data, id));
  return { config, params, lora: null };
}

/** Load `config.json` + safetensors weights from a Hugging Face model folder. */
export function loadModel(dir: string): LlamaModel {
  const config = readLlamaConfig(path.join(dir, 'config.json'));
  const tensors = readSafetensorsDir(dir);
  // Tied checkpoints sometimes still store lm_head.weight; it is ignored.
  return modelFromTensors(config, tensors, dir);
}

/** Parameters in HF layout ([out, in] linear weights), LoRA not merged. */
export function exportTensors(model: LlamaModel): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, v] of model.params) {
    const data = v.dataSync() as Float32Array;
    if (isLinearWeight(name)) {
      const [i, o] = v.shape as [number, number];
      out.set(name, { shape: [o, i], data: transpose2d(data, i, o) });
    } else {
      out.set(name, { shape: [...v.shape], data: Float32Array.from(data) });
    }
  }
  return out;
}

/** Write `model.safetensors` and `config.json` (atomic) into `dir`. */
export function saveModel(model: LlamaModel, dir: string, tensors = exportTensors(model)): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeJsonAtomic(path.join(dir, 'config.json'), toHfConfig(model.config));
}


export function disposeModel(model: LlamaModel): void {
  for (const v of model.params.values()) v.dispose();
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
  return n;
}

/**
 * Grow (or shrink) the vocabulary to `newVocab`: new embedding rows (and
 * new head columns, when untied) are the mean of the existing ones, as
 * transformers' `resize_token_embeddings(mean_resizing=True)` does.
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
  const emb = model.params.get('model.embed_tokens.weight')!;
  const newEmb = resizeRows(emb as tf.Tensor as tf.Tensor2D);
  const id = modelCounter++;
  model.params.set('model.embed_tokens.weight', variableFrom(newEmb, true, `model.embed_tokens.weight#${id}`));
  emb.dispose();
  const head = model.params.get('lm_head.weight');
  if (head) {
    // Stored [d, V]: resize the columns.
    const newHead = tf.tidy(() => tf.transpose(resizeRows(tf.transpose(head as tf.Tensor as tf.Tensor2D))));
    model.params.set('lm_head.weight', variableFrom(newHead, true, `lm_head.weight#${id}`));
    head.dispose();
  }
  c.vocabSize = newVocab;
  c.raw['vocab_size'] = newVocab;
}
