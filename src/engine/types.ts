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
}

export interface ForwardOptions {
  /** Enables LoRA dropout. */
  training: boolean;
  /** Source of dropout masks; required when training with dropout > 0. */
  rng?: Rng;
}
