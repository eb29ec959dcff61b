/**
 * Llama-family model configuration, read from and written to a Hugging Face
 * `config.json`. Llama, Mistral, Qwen2 and Qwen3 share one decoder; they
 * differ in q/k/v bias (Qwen2), per-head q/k RMSNorm (Qwen3) and defaults.
 */
import fs from 'node:fs';
import { ChatsftError } from '../errors.js';
import { FAMILIES, MODEL_TYPES, isModelType, type ModelType } from './families.js';

export type { ModelType } from './families.js';

export interface RopeScalingLlama3 {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScalingLlama3 | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2; Llama's `attention_bias`). */
  attentionBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  maxPositionEmbeddings: number;
  initializerRange: number;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  /**
   * Mistral's (and Qwen2's, with use_sliding_window) attention window: a
   * token attends to at most this many previous positions. The engine does
   * not mask by window, so it refuses sequences longer than this
   * (slidingWindowCheck) instead of silently attending past it; null = none.
   */
  slidingWindow?: number | null;
  padTokenId: number | null;
  /** The original JSON, so unknown keys survive a round trip. */
  raw: Record<string, unknown>;
}

function fail(where: string, msg: string): never {
  throw new ChatsftError('MODEL_INVALID', msg, where);
}

function posInt(raw: Record<string, unknown>, key: string, where: string, dflt?: number): number {
  const v = raw[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)
    fail(where, `${key} must be a positive integer (got ${JSON.stringify(v)})`);
  return v;
}

function posNum(raw: Record<string, unknown>, key: string, where: string, dflt: number): number {
  const v = raw[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(where, `${key} must be a positive number (got ${JSON.stringify(v)})`);
  return v;
}

function optId(v: unknown): number | null {
  return typeof v === 'number' && Number.isInteger(v) ? v : null;
}

/** Validate a parsed `config.json` object. `where` names it in errors. */
export function parseLlamaConfig(raw: Record<string, unknown>, where = 'config.json'): LlamaConfig {
  const modelType = raw['model_type'];
  if (!isModelType(modelType)) {
    fail(where, `model_type ${JSON.stringify(modelType)} is not supported (expected one of ${MODEL_TYPES.join(', ')})`);
  }
  const mt = modelType;
  const family = FAMILIES[mt];
  const hiddenSize = posInt(raw, 'hidden_size', where);
  const numAttentionHeads = posInt(raw, 'num_attention_heads', where);
  const numKeyValueHeads = posInt(raw, 'num_key_value_heads', where, numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fail(where, `num_attention_heads (${numAttentionHeads}) must be a multiple of num_key_value_heads (${numKeyValueHeads})`);
  }
  const headDimRaw = raw['head_dim'];
  let headDim: number;
  if (headDimRaw === undefined || headDimRaw === null) {
    if (hiddenSize % numAttentionHeads !== 0)
      fail(where, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numAttentionHeads}) and head_dim is not given`);
    headDim = hiddenSize / numAttentionHeads;
  } else {
    headDim = posInt(raw, 'head_dim', where);
  }
  if (headDim % 2 !== 0) fail(where, `head_dim (${headDim}) must be even for rotary embeddings`);
  let ropeScaling: RopeScalingLlama3 | null = null;
  const rs = raw['rope_scaling'];
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object') fail(where, 'rope_scaling must be an object or null');
    const r = rs as Record<string, unknown>;
    const type = r['rope_type'] ?? r['type'];
    if (type === 'default') {
      ropeScaling = null;
    } else if (type !== 'llama3') {
      fail(where, `rope_scaling type ${JSON.stringify(type)} is not supported (only llama3)`);
    } else {
      ropeScaling = {
        ropeType: 'llama3',
        factor: posNum(r, 'factor', `${where} rope_scaling`, 8),
        lowFreqFactor: posNum(r, 'low_freq_factor', `${where} rope_scaling`, 1),
        highFreqFactor: posNum(r, 'high_freq_factor', `${where} rope_scaling`, 4),
        originalMaxPositionEmbeddings: posInt(r, 'original_max_position_embeddings', `${where} rope_scaling`, 8192),
      };
    }
  }
  if (raw['mlp_bias'] === true) fail(where, 'mlp_bias: true is not supported');
  const act = raw['hidden_act'] ?? 'silu';
  if (act !== 'silu') fail(where, `hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const attentionBias = typeof raw['attention_bias'] === 'boolean' ? (raw['attention_bias'] as boolean) : family.attentionBiasDefault;
  const eos = raw['eos_token_id'];
  return {
    modelType: mt,
    vocabSize: posInt(raw, 'vocab_size', where),
    hiddenSize,
    intermediateSize: posInt(raw, 'intermediate_size', where),
    numHiddenLayers: posInt(raw, 'num_hidden_layers', where),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: posNum(raw, 'rms_norm_eps', where, 1e-6),
    ropeTheta: posNum(raw, 'rope_theta', where, 10000),
    ropeScaling,
    // LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config all default to false.
    tieWordEmbeddings: typeof raw['tie_word_embeddings'] === 'boolean' ? (raw['tie_word_embeddings'] as boolean) : false,
    attentionBias,
    qkNorm: family.qkNorm,
    maxPositionEmbeddings: posInt(raw, 'max_position_embeddings', where, 2048),
    initializerRange: posNum(raw, 'initializer_range', where, 0.02),
    bosTokenId: optId(raw['bos_token_id']),
    eosTokenId: Array.isArray(eos) ? eos.filter((x): x is number => typeof x === 'number') : optId(eos),
    padTokenId: optId(raw['pad_token_id']),
    slidingWindow: slidingWindowOf(raw, mt),
    raw,
  };
}

/** `sliding_window` when the family applies it: Mistral always, Qwen2/Qwen3 only with use_sliding_window. */
function slidingWindowOf(raw: Record<string, unknown>, mt: ModelType): number | null {
  const w = raw['sliding_window'];
  if (typeof w !== 'number' || !Number.isInteger(w) || w <= 0) return null;
  const rule = FAMILIES[mt].slidingWindow;
  if (rule === 'always') return w;
  if (rule === 'use_sliding_window' && raw['use_sliding_window'] === true) return w;
  return null;
}

/**
 * Refuse a sequence of `length` tokens that the model's sliding window would
 * cut: past the window, the engine's full causal attention would differ from
 * the model's (and from what transformers computes).
 */
export function checkSlidingWindow(c: LlamaConfig, length: number, what: string): void {
  const w = c.slidingWindow ?? null;
  if (w === null || length <= w) return;
  throw new ChatsftError(
    'CONFIG_INVALID',
    `${what} reach ${length} tokens, past the model's sliding_window of ${w} (config.json); the engine does not mask by window, so keep sequences ≤ ${w} tokens (max_length, max_new_tokens)`,
  );
}

/** Read and validate `config.json`. */
export function readLlamaConfig(file: string): LlamaConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ChatsftError('FILE_MISSING', 'cannot read model config', file);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `not JSON (${(e as Error).message})`, file);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ChatsftError('MODEL_INVALID', 'config is not a JSON object', file);
  return parseLlamaConfig(raw as Record<string, unknown>, file);
}

/** Build a config for a fresh model (defaults as in HF LlamaConfig). */
export function makeLlamaConfig(p: {
  modelType?: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads?: number;
  headDim?: number;
  tieWordEmbeddings?: boolean;
  attentionBias?: boolean;
  ropeTheta?: number;
  rmsNormEps?: number;
  maxPositionEmbeddings?: number;
  bosTokenId?: number | null;
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
}): LlamaConfig {
  const modelType = p.modelType ?? 'llama';
  const raw: Record<string, unknown> = {
    architectures: [FAMILIES[modelType].hfArchitecture],
    model_type: modelType,
    vocab_size: p.vocabSize,
    hidden_size: p.hiddenSize,
    intermediate_size: p.intermediateSize,
    num_hidden_layers: p.numHiddenLayers,
    num_attention_heads: p.numAttentionHeads,
    num_key_value_heads: p.numKeyValueHeads ?? p.numAttentionHeads,
    head_dim: p.headDim ?? p.hiddenSize / p.numAttentionHeads,
    hidden_act: 'silu',
    rms_norm_eps: p.rmsNormEps ?? 1e-6,
    rope_theta: p.ropeTheta ?? 10000,
    max_position_embeddings: p.maxPositionEmbeddings ?? 2048,
    initializer_range: 0.02,
    tie_word_embeddings: p.tieWordEmbeddings ?? false,
    attention_bias: p.attentionBias ?? FAMILIES[modelType].attentionBiasDefault,
    torch_dtype: 'float32',
    bos_token_id: p.bosTokenId ?? null,
    eos_token_id: p.eosTokenId ?? null,
    pad_token_id: p.padTokenId ?? null,
  };
  return parseLlamaConfig(raw, 'model config');
}

/** The `config.json` object for this config (unknown original keys kept). */
export function toHfConfig(c: LlamaConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.raw };
  Object.assign(out, {
    architectures: (c.raw['architectures'] as unknown) ?? [FAMILIES[c.modelType].hfArchitecture],
    model_type: c.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    head_dim: c.headDim,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_bias: c.attentionBias,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    pad_token_id: c.padTokenId,
    torch_dtype: 'float32',
  });
  if (c.ropeScaling) {
    out['rope_scaling'] = {
      rope_type: 'llama3',
      factor: c.ropeScaling.factor,
      low_freq_factor: c.ropeScaling.lowFreqFactor,
      high_freq_factor: c.ropeScaling.highFreqFactor,
      original_max_position_embeddings: c.ropeScaling.originalMaxPositionEmbeddings,
    };
  }
  return out;
}
