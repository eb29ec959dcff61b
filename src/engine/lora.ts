/**
 * LoRA (Hu et al. 2021) on the attention and MLP projections, plus trained
 * embedding rows for tokens added for the template: an untrained
 * `<|im_end|>` row is a known reason LoRA fine-tunes never stop. Adapters
 * save in PEFT's layout and merge into the base weights.
 */
import fs from 'node:fs';
import path from 'node:path';
import { tf, variableFrom } from './backend.js';
import { ChatsftError } from '../errors.js';
import { linear } from './ops.js';
import { Rng } from './rng.js';
import { writeSafetensors } from './safetensors.js';
import { expectedShapes, hfTensor, transpose2d } from './model.js';
import { readTensors } from './decode.js';
import { writeJsonAtomic } from '../util/atomic.js';
import type { ForwardOptions, LlamaModel, LoraSpec } from './types.js';
import { FAMILIES, familyOf } from '../hf/families.js';
import type { LlamaConfig } from '../hf/config.js';

/** LoRA targets of the Llama-family decoder, in canonical (layer-major module) order; each family's are in hf/families.ts. */
export const LORA_TARGETS = [...FAMILIES.llama.projections.self_attn, ...FAMILIES.llama.projections.mlp] as const;

/** The family's projections as [module, projection] in canonical order. */
function projections(c: LlamaConfig): Array<[string, string]> {
  const p = familyOf(c.modelType).projections;
  return [...p.self_attn.map((t): [string, string] => ['self_attn', t]), ...p.mlp.map((t): [string, string] => ['mlp', t])];
}

function moduleNames(model: LlamaModel, targets: string[]): string[] {
  const out: string[] = [];
  for (let l = 0; l < model.config.numHiddenLayers; l++) {
    for (const [group, t] of projections(model.config)) {
      if (!targets.includes(t)) continue;
      out.push(`model.layers.${l}.${group}.${t}`);
    }
  }
  return out;
}

/**
 * Attach LoRA adapters: A [in, r] ~ U(±1/√in) (PEFT's kaiming-uniform with
 * a = √5), B [r, out] = 0, so the model's output is unchanged at step 0.
 */
export function addLora(model: LlamaModel, spec: LoraSpec, seed: number): void {
  if (model.lora) throw new ChatsftError('ENGINE_ERROR', 'model already has LoRA adapters');
  const valid = projections(model.config).map(([, t]) => t);
  const bad = spec.targets.filter((t) => !valid.includes(t));
  if (bad.length > 0)
    throw new ChatsftError('CONFIG_INVALID', `unknown LoRA targets ${bad.join(', ')} (valid: ${valid.join(', ')})`, 'lora.targets');
  if (!(spec.r > 0 && Number.isInteger(spec.r))) throw new ChatsftError('CONFIG_INVALID', 'must be a positive integer', 'lora.r');
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw new ChatsftError('CONFIG_INVALID', 'must be in [0, 1)', 'lora.dropout');
  // Trained rows are added to the heap table and head; a host table or frozen head has neither.
  if (spec.trainTokenIds.length > 0 && (model.host?.has('model.embed_tokens.weight') || model.headT)) {
    throw new ChatsftError(
      'CONFIG_INVALID',
      'training embedding rows needs the embedding table and output head in the wasm heap, but this model keeps them frozen (loaded with hostEmbedding/frozenHead): load it without those, or set lora.train_embeddings: none',
      'lora.train_embeddings',
    );
  }
  const rng = new Rng(seed);
  const a = new Map<string, tf.Variable>();
  const b = new Map<string, tf.Variable>();
  for (const name of moduleNames(model, spec.targets)) {
    const [outDim, inDim] = expectedShapes(model.config).get(`${name}.weight`)! as [number, number];
    const bound = 1 / Math.sqrt(inDim);
    const data = new Float32Array(inDim * spec.r);
    for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * bound;
    a.set(name, variableFrom(tf.tensor2d(data, [inDim, spec.r]), true));
    b.set(name, variableFrom(tf.zeros([spec.r, outDim]), true));
  }
  const vocab = model.config.vocabSize;
  const ids = [...new Set(spec.trainTokenIds)].sort((x, y) => x - y);
  for (const id of ids) {
    if (!(Number.isInteger(id) && id >= 0 && id < vocab))
      throw new ChatsftError('CONFIG_INVALID', `token id ${id} is outside the vocabulary (${vocab})`, 'lora.train_embeddings');
  }
  const d = model.config.hiddenSize;
  model.lora = {
    spec: { ...spec, trainTokenIds: ids },
    a,
    b,
    embedRows: Int32Array.from(ids),
    embedDelta: ids.length > 0 ? variableFrom(tf.zeros([ids.length, d]), true) : null,
    headDelta: ids.length > 0 && model.params.has('lm_head.weight') ? variableFrom(tf.zeros([ids.length, d]), true) : null,
  };
}

/** LoRA contribution to projection `name` on x [N, in]: dropout(x) @ A @ B · α/r, or null. */
export function loraDelta(model: LlamaModel, name: string, x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D | null {
  const lora = model.lora;
  const a = lora?.a.get(name);
  const b = lora?.b.get(name);
  if (!lora || !a || !b) return null;
  let xin = x;
  const p = lora.spec.dropout;
  if (opts.training && p > 0) {
    if (!opts.rng) throw new ChatsftError('ENGINE_ERROR', 'LoRA dropout needs an rng');
    const mask = new Float32Array(x.size);
    const keep = 1 / (1 - p);
    for (let i = 0; i < mask.length; i++) mask[i] = opts.rng.next() < p ? 0 : keep;
    xin = tf.mul(x, tf.tensor2d(mask, x.shape)) as tf.Tensor2D;
  }
  const scaling = lora.spec.alpha / lora.spec.r;
  return tf.mul(linear(linear(xin, a as tf.Tensor as tf.Tensor2D), b as tf.Tensor as tf.Tensor2D), scaling) as tf.Tensor2D;
}

/** The variables an optimiser updates: LoRA's when present, else every parameter. */
export function trainableVariables(model: LlamaModel): Map<string, tf.Variable> {
  if (!model.lora) return new Map(model.params);
  const out = new Map<string, tf.Variable>();
  for (const [n, v] of model.lora.a) out.set(`${n}.lora_A`, v);
  for (const [n, v] of model.lora.b) out.set(`${n}.lora_B`, v);
  if (model.lora.embedDelta) out.set('model.embed_tokens.trainable_rows', model.lora.embedDelta);
  if (model.lora.headDelta) out.set('lm_head.trainable_rows', model.lora.headDelta);
  return out;
}

/**
 * One HF-layout tensor with LoRA merged in: W + α/r · (AB)ᵀ for adapted
 * projections, trained rows added to the embedding / head. O(size): the
 * delta is one wasm matMul read back outside tidy (tidy walks returned
 * arrays element by element: 129 s for a 135 M model).
 */
export function mergedTensor(model: LlamaModel, name: string): Float32Array {
  const data = hfTensor(model, name);
  const lora = model.lora;
  if (!lora) return data;
  const module = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : '';
  const a = lora.a.get(module);
  const b = lora.b.get(module);
  if (a && b) {
    const scaling = lora.spec.alpha / lora.spec.r;
    // ΔWᵀ [out, in] = Bᵀ [out, r] @ Aᵀ [r, in]; HF stores W as [out, in].
    const [delta] = readTensors(() => [tf.mul(tf.matMul(tf.transpose(b), tf.transpose(a)), scaling)]) as [Float32Array];
    for (let i = 0; i < delta.length; i++) data[i] = data[i]! + delta[i]!;
  }
  const rowsDelta = name === 'model.embed_tokens.weight' ? lora.embedDelta : name === 'lm_head.weight' ? lora.headDelta : null;
  if (rowsDelta) {
    const d = model.config.hiddenSize;
    const delta = rowsDelta.dataSync();
    lora.embedRows.forEach((row, k) => {
      for (let j = 0; j < d; j++) data[row * d + j] = data[row * d + j]! + delta[k * d + j]!;
    });
  }
  return data;
}

/** HF-layout tensors with LoRA merged in (small models; saving streams mergedTensor). */
export function mergedTensors(model: LlamaModel): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedShapes(model.config)) out.set(name, { shape, data: mergedTensor(model, name) });
  return out;
}

/** Save the adapter as PEFT does: `adapter_config.json` + `adapter_model.safetensors`. */
export function saveAdapter(model: LlamaModel, dir: string, baseModelPath: string | null): void {
  const lora = model.lora;
  if (!lora) throw new ChatsftError('ENGINE_ERROR', 'model has no LoRA adapter to save');
  fs.mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, a] of lora.a) {
    const b = lora.b.get(name)!;
    const [inDim, r] = a.shape as [number, number];
    const outDim = b.shape[1]!;
    // PEFT: lora_A.weight [r, in], lora_B.weight [out, r].
    tensors.set(`base_model.model.${name}.lora_A.weight`, { shape: [r, inDim], data: transpose2d(a.dataSync() as Float32Array, inDim, r) });
    tensors.set(`base_model.model.${name}.lora_B.weight`, {
      shape: [outDim, r],
      data: transpose2d(b.dataSync() as Float32Array, r, outDim),
    });
  }
  if (lora.embedDelta) {
    // PEFT's TrainableTokens stores the rows' full values, not a delta.
    const d = model.config.hiddenSize;
    const [rows] = readTensors(() => [
      tf.add(tf.gather(model.params.get('model.embed_tokens.weight')!, tf.tensor1d(lora.embedRows, 'int32')), lora.embedDelta!),
    ]) as [Float32Array];
    tensors.set('base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta', {
      shape: [lora.embedRows.length, d],
      data: rows,
    });
  }
  if (lora.headDelta) {
    const d = model.config.hiddenSize;
    // lm_head is stored [d, V] here: the rows of its transpose.
    const [rows] = readTensors(() => [
      tf.add(tf.gather(tf.transpose(model.params.get('lm_head.weight')!), tf.tensor1d(lora.embedRows, 'int32')), lora.headDelta!),
    ]) as [Float32Array];
    tensors.set('base_model.model.lm_head.token_adapter.trainable_tokens_delta', { shape: [lora.embedRows.length, d], data: rows });
  }
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const config: Record<string, unknown> = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModelPath,
    r: lora.spec.r,
    lora_alpha: lora.spec.alpha,
    lora_dropout: lora.spec.dropout,
    target_modules: [...lora.spec.targets],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: false,
    modules_to_save: null,
    trainable_token_indices:
      lora.embedRows.length > 0
        ? { embed_tokens: Array.from(lora.embedRows), ...(lora.headDelta ? { lm_head: Array.from(lora.embedRows) } : {}) }
        : null,
  };
  writeJsonAtomic(path.join(dir, 'adapter_config.json'), config);
}
