/**
 * Hugging Face `tokenizer.json` + `tokenizer_config.json` → GGUF tokenizer
 * metadata, following what llama.cpp's `convert_hf_to_gguf.py` and gguf-py's
 * `SpecialVocab` produce:
 *
 * - byte-level BPE (GPT-2, Qwen, Llama 3) → `tokenizer.ggml.model = gpt2`:
 *   tokens as stored in the vocab, merges "a b", and `tokenizer.ggml.pre`
 *   naming the pre-tokenizer regex llama.cpp must use;
 * - SentencePiece-style BPE with byte fallback (Llama 2, Mistral) →
 *   `tokenizer.ggml.model = llama`: pieces, scores, byte tokens `<0xXX>`.
 *
 * The EOT (the token the chat template closes assistant turns with) is
 * written as `tokenizer.ggml.eot_token_id`: llama.cpp puts eos, eot and eom
 * in its end-of-generation set (llama-vocab.cpp, `special_eog_ids`), so this
 * is what makes it stop on the EOT. There is no GGUF key for an explicit EOG
 * list in llama.cpp.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { kv, type GgufKv } from './gguf-file.js';
import { addsBos, configChatTemplate, postProcessorAdds, readJson, tokenString, type AddedToken, type Json } from '../hf/files.js';

/** llama.cpp `llama_token_type`. */
const TT = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/**
 * Pre-tokenizer regexes of tokenizer.json → llama.cpp `tokenizer.ggml.pre`
 * names whose regex is the same (llama-vocab.cpp, `llm_tokenizer_bpe`).
 */
const PRE_BY_REGEX: Record<string, string> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    'qwen2',
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    'llama-bpe',
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+": 'gpt-2',
};

export interface GgufTokenizerOptions {
  /** The token that closes assistant turns, e.g. `<|im_end|>`. Must be one token of the vocabulary. */
  eotToken: string;
  /** Pad token actually used in training (defaults to tokenizer_config's). */
  padToken?: string | null;
  /** Chat template to embed (defaults to tokenizer_config's). */
  chatTemplate?: string | null;
  /** Force `tokenizer.ggml.pre` when the pre-tokenizer is not recognised. */
  preTokenizer?: string;
  /** Rows of the embedding matrix; ids without a token become `[PADn]` (unused). */
  vocabSize: number;
  /** config.json ids used when tokenizer_config names no bos/eos. */
  configBosId?: number | null;
  configEosId?: number | null;
}

export interface GgufTokenizerInfo {
  model: 'gpt2' | 'llama';
  pre: string | null;
  bosId: number | null;
  eosId: number;
  eotId: number;
  padId: number | null;
  unkId: number | null;
  addBos: boolean;
  tokens: number;
}

function looksSpecial(tok: string): boolean {
  // gguf-py `does_token_look_special`: control-looking tokens are CONTROL even if not flagged special.
  return (tok.startsWith('<|') && tok.endsWith('|>')) || tok === '<pad>' || tok === '<mask>';
}

function detectPre(tj: Json, where: string): string {
  const pt = tj['pre_tokenizer'] as Json | null | undefined;
  if (pt && pt['type'] === 'ByteLevel' && pt['use_regex'] !== false) {
    if (pt['add_prefix_space'] === true) {
      throw new ChatsftError(
        'EXPORT_ERROR',
        'ByteLevel pre-tokenizer with add_prefix_space has no llama.cpp equivalent; pass preTokenizer to force one',
        where,
      );
    }
    return 'gpt-2';
  }
  if (pt && pt['type'] === 'Sequence' && Array.isArray(pt['pretokenizers'])) {
    const parts = pt['pretokenizers'] as Json[];
    const split = parts[0];
    const pattern = split?.['pattern'] as Json | undefined;
    const regex = pattern?.['Regex'];
    if (
      parts.length === 2 &&
      split?.['type'] === 'Split' &&
      typeof regex === 'string' &&
      parts[1]?.['type'] === 'ByteLevel' &&
      parts[1]['use_regex'] === false
    ) {
      const pre = PRE_BY_REGEX[regex];
      if (pre) return pre;
    }
  }
  throw new ChatsftError(
    'EXPORT_ERROR',
    `pre-tokenizer ${JSON.stringify(pt).slice(0, 200)} is not one llama.cpp is known to reproduce (gpt-2, qwen2, llama-bpe); pass preTokenizer to name one`,
    where,
  );
}

function spmAddsSpacePrefix(tj: Json): boolean {
  const norm = tj['normalizer'] as Json | null | undefined;
  const norms = norm?.['type'] === 'Sequence' ? ((norm['normalizers'] as Json[]) ?? []) : norm ? [norm] : [];
  if (norms.some((n) => n['type'] === 'Prepend' && n['prepend'] === '\u2581')) return true;
  const pt = tj['pre_tokenizer'] as Json | null | undefined;
  const pts = pt?.['type'] === 'Sequence' ? ((pt['pretokenizers'] as Json[]) ?? []) : pt ? [pt] : [];
  const meta = pts.find((p) => p['type'] === 'Metaspace');
  if (meta) return meta['prepend_scheme'] !== undefined ? meta['prepend_scheme'] !== 'never' : meta['add_prefix_space'] !== false;
  return false;
}

/** Build the `tokenizer.*` GGUF metadata for the tokenizer in `modelDir`. */
export function ggufTokenizerMetadata(modelDir: string, opts: GgufTokenizerOptions): { kvs: GgufKv[]; info: GgufTokenizerInfo } {
  const tjFile = path.join(modelDir, 'tokenizer.json');
  const tcFile = path.join(modelDir, 'tokenizer_config.json');
  const tj = readJson(tjFile);
  const tc = fs.existsSync(tcFile) ? readJson(tcFile) : {};
  const model = tj['model'] as Json | undefined;
  if (!model || model['type'] !== 'BPE') {
    throw new ChatsftError(
      'EXPORT_ERROR',
      `tokenizer model type ${JSON.stringify(model?.['type'])} is not supported for GGUF (only BPE)`,
      tjFile,
    );
  }
  const vocab = model['vocab'] as Record<string, number>;
  const added = ((tj['added_tokens'] as AddedToken[] | undefined) ?? []).map((a) => ({ id: a.id, content: a.content, special: a.special }));
  const addedById = new Map(added.map((a) => [a.id, a]));
  const idOf = new Map<string, number>(Object.entries(vocab));
  for (const a of added) idOf.set(a.content, a.id);

  let n = opts.vocabSize;
  for (const id of idOf.values()) n = Math.max(n, id + 1);
  const byId: (string | undefined)[] = new Array(n);
  for (const [tok, id] of Object.entries(vocab)) byId[id] = tok;
  for (const a of added) byId[a.id] = a.content;

  const spm = model['byte_fallback'] === true;
  const unkTok = tokenString(tc['unk_token']) ?? (typeof model['unk_token'] === 'string' ? (model['unk_token'] as string) : null);
  const unkId = unkTok !== null ? (idOf.get(unkTok) ?? null) : null;

  const tokens: string[] = new Array(n);
  const types: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const t = byId[i];
    if (t === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TT.UNUSED;
      continue;
    }
    const a = addedById.get(i);
    tokens[i] = t;
    // Only SentencePiece vocabularies mark unk as UNKNOWN (the converter's gpt2 path never does; GPT-2 style
    // tokenizers reuse <|endoftext|> as unk and it must stay a control token).
    if (spm && i === unkId) types[i] = TT.UNKNOWN;
    else if (a && (a.special || looksSpecial(t))) types[i] = TT.CONTROL;
    else if (a) {
      types[i] = TT.USER_DEFINED;
      // llama.cpp matches user-defined tokens against raw text, so SentencePiece's ▁ is turned back into a space.
      if (spm) tokens[i] = t.replaceAll('\u2581', ' ');
    } else if (spm && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) types[i] = TT.BYTE;
    else types[i] = TT.NORMAL;
  }

  const rawMerges = (model['merges'] as (string | [string, string])[] | undefined) ?? [];
  const merges = rawMerges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));

  const kvs: GgufKv[] = [];
  let pre: string | null = null;
  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges the bigram whose result has
    // the highest score; HF BPE merges by rank. Scoring each token by minus
    // the rank of the first merge that produces it makes the two agree.
    const scores = new Array<number>(n).fill(0);
    const seen = new Set<number>();
    merges.forEach((m, rank) => {
      const sp = m.indexOf(' ', 1);
      const id = idOf.get(m.slice(0, sp) + m.slice(sp + 1));
      if (id !== undefined && !seen.has(id)) {
        seen.add(id);
        scores[id] = -rank;
      }
    });
    kvs.push(kv.str('tokenizer.ggml.model', 'llama'), kv.strs('tokenizer.ggml.tokens', tokens), kv.f32s('tokenizer.ggml.scores', scores));
    kvs.push(kv.i32s('tokenizer.ggml.token_type', types), kv.bool('tokenizer.ggml.add_space_prefix', spmAddsSpacePrefix(tj)));
  } else {
    pre = opts.preTokenizer ?? detectPre(tj, tjFile);
    kvs.push(kv.str('tokenizer.ggml.model', 'gpt2'), kv.str('tokenizer.ggml.pre', pre), kv.strs('tokenizer.ggml.tokens', tokens));
    kvs.push(kv.i32s('tokenizer.ggml.token_type', types), kv.strs('tokenizer.ggml.merges', merges));
  }

  const resolve = (tok: string | null, what: string): number | null => {
    if (tok === null) return null;
    const id = idOf.get(tok);
    if (id === undefined) throw new ChatsftError('EXPORT_ERROR', `${what} ${JSON.stringify(tok)} is not in the vocabulary`, tcFile);
    return id;
  };
  const eotId = resolve(opts.eotToken, 'EOT token')!;
  const bosTok = tokenString(tc['bos_token']);
  const bosId = resolve(bosTok, 'bos_token') ?? opts.configBosId ?? null;
  const eosId = resolve(tokenString(tc['eos_token']), 'eos_token') ?? opts.configEosId ?? eotId;
  const padTok = opts.padToken !== undefined ? opts.padToken : tokenString(tc['pad_token']);
  const padId = resolve(padTok, 'pad token');
  const addBos = addsBos(tc, tj, bosTok);
  const addEos =
    typeof tc['add_eos_token'] === 'boolean'
      ? (tc['add_eos_token'] as boolean)
      : postProcessorAdds(tj, tokenString(tc['eos_token']), 'last');
  if (addBos && bosId === null) throw new ChatsftError('EXPORT_ERROR', 'add_bos_token is true but no bos token is set', tcFile);

  if (bosId !== null) kvs.push(kv.u32('tokenizer.ggml.bos_token_id', bosId));
  kvs.push(kv.u32('tokenizer.ggml.eos_token_id', eosId), kv.u32('tokenizer.ggml.eot_token_id', eotId));
  if (unkId !== null) kvs.push(kv.u32('tokenizer.ggml.unknown_token_id', unkId));
  if (padId !== null) kvs.push(kv.u32('tokenizer.ggml.padding_token_id', padId));
  kvs.push(kv.bool('tokenizer.ggml.add_bos_token', addBos), kv.bool('tokenizer.ggml.add_eos_token', addEos));
  const template = opts.chatTemplate !== undefined ? opts.chatTemplate : configChatTemplate(tc);
  if (template) kvs.push(kv.str('tokenizer.chat_template', template));

  return {
    kvs,
    info: { model: spm ? 'llama' : 'gpt2', pre, bosId, eosId, eotId, padId, unkId, addBos, tokens: n },
  };
}
