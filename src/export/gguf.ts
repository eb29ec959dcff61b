/**
 * Hugging Face model folder → one GGUF v3 file llama.cpp loads, with the EOT
 * among its end-of-generation tokens.
 *
 *   exportGguf('runs/chatsft', 'model.gguf', { eotToken: '<|im_end|>', dtype: 'f16' })
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { readLlamaConfig, type LlamaConfig } from '../hf/config.js';
import { openWeights, readF32 } from '../hf/safetensors.js';
import { kv, writeGguf, type GgufKv } from './gguf-file.js';
import { ggufTokenizerMetadata, type GgufTokenizerInfo } from './gguf-tokenizer.js';
import { ggufArch, ggufTensors, type GgufArch } from './gguf-tensors.js';
import { readJson } from '../hf/files.js';
import { eosIdField, stopIdsFor } from '../hf/stop_ids.js';
import { checkOutput, replaceOutputSync } from '../util/atomic.js';

export interface GgufExportOptions {
  /** The token that closes assistant turns (e.g. `<|im_end|>`); written as eot so llama.cpp stops on it. */
  eotToken: string;
  /** Tensor type of matrices (norms and biases stay f32). Default f16. */
  dtype?: 'f32' | 'f16';
  /** Pad token actually used in training (defaults to tokenizer_config's). */
  padToken?: string | null;
  /** Chat template to embed (defaults to tokenizer_config's). */
  chatTemplate?: string | null;
  /** `general.name` (defaults to the folder name). */
  name?: string;
  /** Force `tokenizer.ggml.pre` for byte-level BPE tokenizers that are not recognised. */
  preTokenizer?: string;
  /** Replace an existing GGUF that chatsft wrote (anything else is refused). */
  overwrite?: boolean;
  /** Lines for the user (temps of killed exports reclaimed). */
  onNote?: (line: string) => void;
}

/** Metadata key that marks a GGUF written by chatsft (llama.cpp ignores keys it does not know). */
export const GGUF_MARKER_KEY = 'chatsft.generator';

/** Why `file` is not a GGUF chatsft wrote (null when it is): the marker key sits in the first kilobytes of the header. */
export function notChatsftGguf(file: string): string | null {
  const buf = Buffer.alloc(65536);
  let n = 0;
  const fd = fs.openSync(file, 'r');
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  const head = buf.subarray(0, n);
  if (head.subarray(0, 4).toString('latin1') !== 'GGUF') return 'not a GGUF file';
  return head.includes(GGUF_MARKER_KEY, 0, 'latin1') ? null : `a GGUF file not written by chatsft (no ${GGUF_MARKER_KEY} in its metadata)`;
}

export interface GgufExportResult {
  file: string;
  bytes: number;
  arch: GgufArch;
  tensors: number;
  tokenizer: GgufTokenizerInfo;
  /**
   * generation_config.json stop ids that GGUF cannot carry (it has one eos
   * and one eot slot; llama.cpp adds others only by token name). Callers
   * should warn about these.
   */
  droppedStopIds: number[];
}

/** Hyper-parameters under `<arch>.*` (llama.cpp `llm_kv` names). */
export function ggufModelMetadata(c: LlamaConfig, arch: GgufArch): GgufKv[] {
  const a = arch;
  return [
    kv.u32(`${a}.vocab_size`, c.vocabSize),
    kv.u32(`${a}.context_length`, c.maxPositionEmbeddings),
    kv.u32(`${a}.embedding_length`, c.hiddenSize),
    kv.u32(`${a}.block_count`, c.numHiddenLayers),
    kv.u32(`${a}.feed_forward_length`, c.intermediateSize),
    kv.u32(`${a}.attention.head_count`, c.numAttentionHeads),
    kv.u32(`${a}.attention.head_count_kv`, c.numKeyValueHeads),
    kv.u32(`${a}.attention.key_length`, c.headDim),
    kv.u32(`${a}.attention.value_length`, c.headDim),
    kv.f32(`${a}.attention.layer_norm_rms_epsilon`, c.rmsNormEps),
    kv.f32(`${a}.rope.freq_base`, c.ropeTheta),
    kv.u32(`${a}.rope.dimension_count`, c.headDim),
  ];
}

/**
 * The folder's stop ids under the one policy (hf/stop_ids.ts). GGUF carries
 * two of them (eos, eot slots); the exporter reports the others as dropped.
 */
export function policyStopIds(srcDir: string, cfg: LlamaConfig, tok: { eosId: number; eotId: number }): number[] {
  const genFile = path.join(srcDir, 'generation_config.json');
  const gen = fs.existsSync(genFile) ? readJson(genFile) : {};
  return stopIdsFor({
    eotIds: [tok.eotId],
    generationConfigEos: eosIdField(gen['eos_token_id']),
    configEos: cfg.eosTokenId,
    tokenizerEos: tok.eosId,
  });
}

export function exportGguf(srcDir: string, outFile: string, opts: GgufExportOptions): GgufExportResult {
  const dtype = opts.dtype ?? 'f16';
  const replacing = {
    kind: 'file' as const,
    overwrite: Boolean(opts.overwrite),
    notOwned: notChatsftGguf,
    protect: [srcDir],
    flag: '--out',
    ...(opts.onNote ? { onNote: opts.onNote } : {}),
  };
  // Refuse early, before reading weights.
  checkOutput(outFile, replacing);
  const cfg = readLlamaConfig(path.join(srcDir, 'config.json'));
  const arch = ggufArch(cfg);
  const eos = cfg.eosTokenId;
  const tok = ggufTokenizerMetadata(srcDir, {
    eotToken: opts.eotToken,
    padToken: opts.padToken,
    chatTemplate: opts.chatTemplate,
    preTokenizer: opts.preTokenizer,
    vocabSize: cfg.vocabSize,
    configBosId: cfg.bosTokenId,
    configEosId: Array.isArray(eos) ? (eos[0] ?? null) : eos,
  });
  if (tok.info.tokens > cfg.vocabSize) {
    throw new ChatsftError(
      'EXPORT_ERROR',
      `the tokenizer has ${tok.info.tokens} tokens but the model only ${cfg.vocabSize} embedding rows`,
      srcDir,
    );
  }
  // Tensors are read from disk one at a time while the file is written: peak memory is
  // the largest tensor (in f32, plus its f16 copy), not the model.
  const index = openWeights(srcDir);
  const lazy = new Map([...index.entries].map(([name, e]) => [name, { shape: e.shape, data: () => readF32(e) }]));
  const tensors = ggufTensors(cfg, lazy, dtype);
  const kvs: GgufKv[] = [
    kv.str('general.architecture', arch),
    kv.str('general.type', 'model'),
    kv.str('general.name', opts.name ?? path.basename(path.resolve(srcDir))),
    // llama_ftype: 0 = all F32, 1 = mostly F16.
    kv.u32('general.file_type', dtype === 'f16' ? 1 : 0),
    kv.u32('general.quantization_version', 2),
    kv.u32('general.alignment', 32),
    kv.str(GGUF_MARKER_KEY, 'chatsft'),
    ...ggufModelMetadata(cfg, arch),
    ...tok.kvs,
  ];
  const { bytes } = replaceOutputSync(outFile, (tmp) => writeGguf(tmp, kvs, tensors), replacing);
  const droppedStopIds = policyStopIds(srcDir, cfg, tok.info).filter((id) => id !== tok.info.eosId && id !== tok.info.eotId);
  return { file: outFile, bytes, arch, tensors: tensors.length, tokenizer: tok.info, droppedStopIds };
}
