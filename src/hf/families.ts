/**
 * Model families as data: everything that differs between the decoder
 * families chatsft supports, in one descriptor per `config.json`
 * `model_type`. Config parsing (hf/config.ts), the engine's parameter shapes
 * (engine/model.ts) and the GGUF tensor mapping (export/gguf-tensors.ts)
 * read these fields instead of testing model_type themselves, so adding a
 * family of the same decoder is one entry here plus tests.
 *
 * What the families share (and so is not here): the norm and embedding
 * tensor names, SiLU MLP and rotate-half RoPE in Hugging Face's layout. The
 * linear projections (the LoRA target groups, engine/lora.ts) are per family
 * although all four have the same ones today.
 */

export type ModelType = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

/** llama.cpp graph names (gguf `general.architecture`). */
export type GgufArch = 'llama' | 'qwen2' | 'qwen3';

/** Linear projections per module of a decoder layer (`model.layers.N.<module>.<proj>`), in canonical order. */
export interface Projections {
  self_attn: readonly string[];
  mlp: readonly string[];
}

const LLAMA_PROJECTIONS: Projections = { self_attn: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], mlp: ['gate_proj', 'up_proj', 'down_proj'] };

export interface ModelFamily {
  /** The linear layers of a decoder layer: what LoRA can target, and how a target name maps to its module. */
  projections: Projections;
  /** `architectures[0]` written into a config.json that has none. */
  hfArchitecture: string;
  /** `attention_bias` when config.json does not say (the family's transformers config default). */
  attentionBiasDefault: boolean;
  /** With attention bias on, o_proj has one too (Llama/Qwen3 `attention_bias`); Qwen2's bias is q/k/v only. */
  oProjBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (q_norm / k_norm, shape [head_dim]). */
  qkNorm: boolean;
  /** When config.json's `sliding_window` applies: always (Mistral), only with `use_sliding_window` (Qwen), never. */
  slidingWindow: 'always' | 'use_sliding_window' | 'never';
  gguf: {
    arch: GgufArch;
    /**
     * llama.cpp's `llama` graph rotates adjacent pairs (GPT-J style), so q/k rows are permuted
     * on export (convert_hf_to_gguf.py's LlamaModel); the qwen graphs rotate halves as HF does.
     */
    permuteQk: boolean;
    /** The graph loads q/k/v biases unconditionally: a bias-free model gets zeros. */
    requiresQkvBias: boolean;
    /** The graph has no attention biases at all: a model with them cannot be exported. */
    forbidsBias: boolean;
    /** The graph sizes q/o as [n_embd, n_embd]: num_attention_heads × head_dim must be hidden_size. */
    qDimIsHidden: boolean;
  };
}

const LLAMA_GGUF = { arch: 'llama', permuteQk: true, requiresQkvBias: false, forbidsBias: false, qDimIsHidden: false } as const;

export const FAMILIES: Readonly<Record<ModelType, ModelFamily>> = {
  llama: {
    projections: LLAMA_PROJECTIONS,
    hfArchitecture: 'LlamaForCausalLM',
    attentionBiasDefault: false,
    oProjBias: true,
    qkNorm: false,
    slidingWindow: 'never',
    gguf: LLAMA_GGUF,
  },
  mistral: {
    projections: LLAMA_PROJECTIONS,
    hfArchitecture: 'MistralForCausalLM',
    attentionBiasDefault: false,
    oProjBias: true,
    qkNorm: false,
    slidingWindow: 'always',
    gguf: LLAMA_GGUF,
  },
  qwen2: {
    projections: LLAMA_PROJECTIONS,
    hfArchitecture: 'Qwen2ForCausalLM',
    attentionBiasDefault: true,
    oProjBias: false,
    qkNorm: false,
    slidingWindow: 'use_sliding_window',
    gguf: { arch: 'qwen2', permuteQk: false, requiresQkvBias: true, forbidsBias: false, qDimIsHidden: true },
  },
  qwen3: {
    projections: LLAMA_PROJECTIONS,
    hfArchitecture: 'Qwen3ForCausalLM',
    attentionBiasDefault: false,
    oProjBias: true,
    qkNorm: true,
    slidingWindow: 'use_sliding_window',
    gguf: { arch: 'qwen3', permuteQk: false, requiresQkvBias: false, forbidsBias: true, qDimIsHidden: false },
  },
};

export const MODEL_TYPES = Object.keys(FAMILIES) as ModelType[];

export function isModelType(v: unknown): v is ModelType {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(FAMILIES, v);
}

export function familyOf(modelType: ModelType): ModelFamily {
  return FAMILIES[modelType];
}
