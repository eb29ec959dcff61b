/** Engine data types shared by the model, LoRA, optimiser and trainer. */
import type { tf } from './backend.js';
import type { LlamaConfig } from '../hf/config.js';
import type { Rng } from './rng.js';

export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  /** Projection short names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj. */
  targets: string[];
  /** Token ids whose embedding rows are trained (tokens added for the template). */
  trainTokenIds: number[];
}

export interface LoraState {
  spec: LoraSpec;
  /** Keyed by module name (`model.layers.0.self_attn.q_proj`): A as [in, r]. */
  a: Map<string, tf.Variable>;
  /** B as [r, out], zero-initialised so the adapted model starts equal to the base. */
  b: Map<string, tf.Variable>;
  /** Rows of the embedding that are trained, and their deltas [rows, d]. */
  embedRows: Int32Array;
  embedDelta: tf.Variable | null;
  /** With an untied head, the same rows of lm_head ([V, d] in HF layout) are trained too. */
  headDelta: tf.Variable | null;
}

/**
 * A Llama-family decoder. `params` uses Hugging Face tensor names; linear
 * weights (`*_proj.weight`, `lm_head.weight`) are stored input-major
 * [in, out], the transpose of HF's [out, in], so forward products need no
 * transpose on wasm. `exportTensors` converts back.
 */
export interface LlamaModel {
  config: LlamaConfig;
  params: Map<string, tf.Variable>;
  lora: LoraState | null;
  /**
   * Frozen layer matrices kept outside the wasm heap (its 4 GiB cap), in
   * their stored dtype and HF layout [out, in]; a layer's are uploaded for
   * that layer's forward/backward and freed again (see weights.ts).
   */
  host?: Map<string, HostTensor>;
  /** Host matrices uploaded right now: w [in, out] and wT [out, in]. */
  resident?: Map<string, { w: tf.Tensor2D; wT: tf.Tensor2D }>;
  /**
   * The frozen output matrix [d, V], built once at load when the embedding
   * table stays in host memory (large vocabularies): no [V, d] table and no
   * per-use transpose in the heap, whose freed 0.5 GB holes XNNPACK's
   * slightly larger packed copies cannot reuse.
   */
  headT?: tf.Tensor2D;
  /** Recompute each decoder layer in the backward pass (activations O(one layer)). */
  gradientCheckpointing?: boolean;
}

/** A tensor in host memory as stored on disk: bf16/f16 words or f32 values. */
export interface HostTensor {
  dtype: 'F32' | 'F16' | 'BF16';
  /** HF shape ([out, in] for linear weights). */
  shape: number[];
  data: Float32Array | Uint16Array;
}

export interface ForwardOptions {
  /** Enables LoRA dropout. */
  training: boolean;
  /** Source of dropout masks; required when training with dropout > 0. */
  rng?: Rng;
}

/**
 * Where a training step is, reported while it runs (a step of a 0.5 B model
 * takes minutes): micro-batch `micro` of `micros` (1-based) and, on the
 * layer-wise path, the decoder layer (1-based, of `layers`) being run
 * forward or recomputed for the backward. The taped path reports micro-batch
 * starts only (its layers run inside one tape).
 */
export interface StepTick {
  micro: number;
  micros: number;
  phase: 'micro' | 'forward' | 'backward';
  layer?: number;
  layers?: number;
}

export type OnStepTick = (t: StepTick) => void;
