/**
 * Hugging Face tensor names and layouts → llama.cpp's (gguf-py
 * `tensor_mapping.py` names; the Q/K permutation of convert_hf_to_gguf.py's
 * `LlamaModel`).
 */
import { ChatsftError } from '../errors.js';
import type { LlamaConfig } from '../hf/config.js';
import { familyOf, type GgufArch } from '../hf/families.js';
import { GGML_TYPE_F16, GGML_TYPE_F32, type GgufTensor } from './gguf-file.js';

export type { GgufArch } from '../hf/families.js';

/**
 * The llama.cpp architecture for a model type. Llama and Mistral use
 * llama.cpp's `llama` graph, whose RoPE rotates adjacent pairs (GPT-J
 * style); Qwen2/Qwen3 graphs rotate the two halves of each head (NeoX style),
 * as Hugging Face does for every one of these models.
 */
export function ggufArch(c: LlamaConfig): GgufArch {
  return familyOf(c.modelType).gguf.arch;
}

const LAYER_MAP: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_proj.bias': 'attn_q.bias',
  'self_attn.k_proj.bias': 'attn_k.bias',
  'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.o_proj.bias': 'attn_output.bias',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
};

/** HF name → GGUF name, or null for tensors llama.cpp does not load (rotary caches). */
export function ggufTensorName(hf: string): string | null {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  if (hf.endsWith('rotary_emb.inv_freq')) return null;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  const mapped = m ? LAYER_MAP[m[2]!] : undefined;
  if (!m || !mapped) throw new ChatsftError('EXPORT_ERROR', `tensor '${hf}' has no llama.cpp equivalent`);
  return `blk.${m[1]}.${mapped}`;
}

/**
 * Undo Hugging Face's rotate-half row order for llama.cpp's pairwise RoPE:
 * within each head, row j*(d/2)+i moves to i*2+j. Same as the converter's
 * `reshape(n_head, 2, d/2, ...).swapaxes(1, 2)`. Works for weights [rows, cols]
 * and biases (cols = 1).
 */
export function permuteRope(data: Float32Array, rows: number, nHead: number): Float32Array {
  if (rows % nHead !== 0 || (rows / nHead) % 2 !== 0) {
    throw new ChatsftError('EXPORT_ERROR', `cannot split ${rows} rows into ${nHead} heads of even size`);
  }
  const cols = data.length / rows;
  const hd = rows / nHead;
  const half = hd / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < nHead; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const src = (h * hd + j * half + i) * cols;
        const dst = (h * hd + i * 2 + j) * cols;
        out.set(data.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/**
 * llama3 rope scaling as the `rope_freqs.weight` tensor llama.cpp divides
 * each rotary frequency by (convert_hf_to_gguf.py `generate_extra_tensors`).
 */
export function llama3RopeFactors(c: LlamaConfig): Float32Array | null {
  const rs = c.ropeScaling;
  if (!rs) return null;
  const dim = c.headDim;
  const lowWavelen = rs.originalMaxPositionEmbeddings / rs.lowFreqFactor;
  const highWavelen = rs.originalMaxPositionEmbeddings / rs.highFreqFactor;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const freq = 1 / c.ropeTheta ** ((2 * i) / dim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = rs.factor;
    else {
      const smooth = (rs.originalMaxPositionEmbeddings / wavelen - rs.lowFreqFactor) / (rs.highFreqFactor - rs.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / rs.factor + smooth);
    }
  }
  return out;
}

/**
 * GGUF tensors for a model's HF tensors, in llama.cpp's order (embeddings,
 * blocks, output). 2-D tensors take `dtype`; norms and biases stay F32 as the
 * converter keeps them (ggml adds them to F32 activations).
 */
/** An HF tensor whose values may be read only when written (streaming export). */
export interface HfTensorSource {
  shape: number[];
  data: Float32Array | (() => Float32Array);
}

export function ggufTensors(c: LlamaConfig, hf: Map<string, HfTensorSource>, dtype: 'f32' | 'f16'): GgufTensor[] {
  const g = familyOf(c.modelType).gguf;
  const arch = g.arch;
  if (g.qDimIsHidden && c.numAttentionHeads * c.headDim !== c.hiddenSize) {
    // llama.cpp's qwen2 graph sizes q/o as [n_embd, n_embd] (llama and qwen3 read attention.key_length).
    throw new ChatsftError(
      'EXPORT_ERROR',
      `llama.cpp's ${arch} graph needs num_attention_heads × head_dim = hidden_size (${c.numAttentionHeads} × ${c.headDim} ≠ ${c.hiddenSize})`,
    );
  }
  const out: GgufTensor[] = [];
  const factors = llama3RopeFactors(c);
  if (factors) out.push({ name: 'rope_freqs.weight', shape: [factors.length], type: GGML_TYPE_F32, data: factors });
  const seen = new Set<string>();
  for (const [name, t] of hf) {
    if (name === 'lm_head.weight' && c.tieWordEmbeddings) continue; // llama.cpp reuses token_embd
    const gname = ggufTensorName(name);
    if (gname === null) continue;
    seen.add(gname);
    if (g.forbidsBias && gname.endsWith('.bias'))
      throw new ChatsftError('EXPORT_ERROR', `llama.cpp's ${arch} graph has no attention biases ('${name}')`);
    let data: Float32Array | (() => Float32Array) = t.data;
    if (g.permuteQk && /attn_[qk]\.(weight|bias)$/.test(gname)) {
      const nHead = gname.includes('attn_q') ? c.numAttentionHeads : c.numKeyValueHeads;
      const src = t.data;
      data = () => permuteRope(typeof src === 'function' ? src() : src, t.shape[0]!, nHead);
    }
    out.push({ name: gname, shape: t.shape, type: t.shape.length >= 2 && dtype === 'f16' ? GGML_TYPE_F16 : GGML_TYPE_F32, data });
  }
  if (!seen.has('token_embd.weight')) throw new ChatsftError('EXPORT_ERROR', 'model.embed_tokens.weight is missing');
  if (!seen.has('output_norm.weight')) throw new ChatsftError('EXPORT_ERROR', 'model.norm.weight is missing');
  if (!c.tieWordEmbeddings && !seen.has('output.weight'))
    throw new ChatsftError('EXPORT_ERROR', 'lm_head.weight is missing and tie_word_embeddings is false');
  for (let l = 0; l < c.numHiddenLayers; l++) {
    for (const part of ['attn_norm', 'ffn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down']) {
      if (!seen.has(`blk.${l}.${part}.weight`)) throw new ChatsftError('EXPORT_ERROR', `layer ${l} has no ${part} weight`);
    }
    if (g.requiresQkvBias) {
      // llama.cpp's qwen2 graph requires q/k/v biases; a bias-free layout gets zeros (same function).
      for (const [p, rows] of [
        ['attn_q', c.numAttentionHeads * c.headDim],
        ['attn_k', c.numKeyValueHeads * c.headDim],
        ['attn_v', c.numKeyValueHeads * c.headDim],
      ] as const) {
        const name = `blk.${l}.${p}.bias`;
        if (!seen.has(name)) out.push({ name, shape: [rows], type: GGML_TYPE_F32, data: new Float32Array(rows) });
      }
    }
  }
  return out;
}
