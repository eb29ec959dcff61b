/**
 * The demo's tokenizer folder: a small byte-level BPE in the GPT-2 scheme
 * (ByteLevel pre-tokenizer with the GPT-2 split regex, ByteLevel decoder),
 * so that llama.cpp can load it as `tokenizer.ggml.model = gpt2` with the
 * `gpt-2` pre-tokenizer, plus ChatML special tokens and a tokenizer_config
 * shaped like OpenHermes-2.5-Mistral's: eos = `<|im_end|>`, no pad token,
 * left padding. That is the setup of SPEC §1: a trainer that needs a pad
 * token falls back to pad = eos.
 *
 * The merges come from a deterministic byte-level BPE trainer (below): the
 * `tokenizers` binding can train BPE, but its Node API exposes no way to set
 * the trainer's vocabulary size or special tokens. Frequencies count GPT-2
 * pre-tokens; ties go to the lexicographically smallest pair, so the result
 * depends only on the corpus and the target size.
 *
 * Vocabulary layout: ids 0-255 are the byte symbols in byte order, merges
 * follow, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
 */

import { mkdir } from 'node:fs/promises';
import { writeJsonAtomic } from '../util/atomic.js';
import path from 'node:path';
import { ChatsftError } from '../errors.js';

/** GPT-2's pre-tokenizer split, as in `ByteLevel { use_regex: true }`. */
export const GPT2_SPLIT_REGEX = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's `bytes_to_unicode`: byte b -> a printable character. Printable
 * Latin-1 bytes map to themselves; the rest to U+0100 onwards (space -> 'Ġ',
 * '\n' -> 'Ċ'). Index = byte value.
 */
export function byteSymbols(): string[] {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + next++));
  return out;
}

export interface ByteLevelBpe {
  /** token -> id; ids 0-255 are the byte symbols in byte order, merges follow. */
  vocab: Map<string, number>;
  /** Merges in rank order. */
  merges: [string, string][];
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Pre-token frequencies of the corpus, with special-token strings cut out. */
function countWords(corpus: readonly string[], specials: readonly string[]): Map<string, number> {
  const symbols = byteSymbols();
  const encoder = new TextEncoder();
  const specialRe = specials.length > 0 ? new RegExp(specials.map(escapeRegex).join('|'), 'g') : null;
  const counts = new Map<string, number>();
  for (const text of corpus) {
    for (const segment of specialRe ? text.split(specialRe) : [text]) {
      for (const m of segment.matchAll(GPT2_SPLIT_REGEX)) {
        const word = Array.from(encoder.encode(m[0]), (b) => symbols[b] as string).join('');
        counts.set(word, (counts.get(word) ?? 0) + 1);
      }
    }
  }
  return counts;
}

/**
 * Learns merges until `vocabSize` tokens (bytes + merges) exist or no pair
 * occurs at least `minFrequency` times.
 */
export function trainByteLevelBpe(
  corpus: readonly string[],
  options: { vocabSize: number; specialTokens?: readonly string[]; minFrequency?: number },
): ByteLevelBpe {
  const minFrequency = options.minFrequency ?? 2;
  const vocab = new Map<string, number>();
  byteSymbols().forEach((s, b) => vocab.set(s, b));
  const merges: [string, string][] = [];
  // Each distinct pre-token as its current symbol list, with its frequency.
  // Sorted so that iteration order (and so everything) is deterministic.
  const words = [...countWords(corpus, options.specialTokens ?? []).entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([w, count]) => ({ symbols: [...w], count }));

  while (vocab.size < options.vocabSize) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        // Byte symbols never contain a space, so "a b" is an unambiguous key.
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let bestKey: string | null = null;
    let bestCount = 0;
    for (const [key, count] of pairs) {
      if (count > bestCount || (count === bestCount && bestKey !== null && key < bestKey)) {
        bestKey = key;
        bestCount = count;
      }
    }
    if (bestKey === null || bestCount < minFrequency) break;
    const [left, right] = bestKey.split(' ') as [string, string];
    const merged = left + right;
    merges.push([left, right]);
    if (!vocab.has(merged)) vocab.set(merged, vocab.size);
    for (const w of words) {
      const s = w.symbols;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(s[i] as string);
        }
      }
      w.symbols = out;
    }
  }
  return { vocab, merges };
}

export const DEMO_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** OpenHermes-2.5-Mistral's ChatML template, verbatim. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface DemoTokenizerInfo {
  /** Total vocabulary including the special tokens. */
  vocabSize: number;
  merges: number;
  ids: { endoftext: number; imStart: number; imEnd: number };
  /** Absolute paths of the files written. */
  files: string[];
}

const specialEntry = (content: string): Record<string, unknown> => ({
  content,
  lstrip: false,
  normalized: false,
  rstrip: false,
  single_word: false,
});

/** The `tokenizer.json` document (Hugging Face `tokenizers` format). */
export function demoTokenizerJson(bpe: ByteLevelBpe): Record<string, unknown> {
  const firstSpecial = bpe.vocab.size;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: DEMO_SPECIAL_TOKENS.map((content, i) => ({ id: firstSpecial + i, ...specialEntry(content), special: true })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    // As in GPT-2's tokenizer.json: offsets only, ids are unchanged.
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(bpe.vocab),
      merges: bpe.merges,
    },
  };
}

/**
 * Trains the demo BPE on `corpus` (rendered ChatML texts; special-token
 * strings in them are cut out before counting) and writes the tokenizer
 * files of a Hugging Face model folder into `dir` (created if missing):
 * tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 * generation_config.json. The engine adds config.json and weights.
 */
export async function writeDemoModelFolder(
  dir: string,
  corpus: readonly string[],
  options: { vocabSize?: number } = {},
): Promise<DemoTokenizerInfo> {
  const vocabSize = options.vocabSize ?? 512;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + DEMO_SPECIAL_TOKENS.length) {
    throw new ChatsftError('USAGE', `demo vocab size must be an integer >= ${256 + DEMO_SPECIAL_TOKENS.length}, got ${vocabSize}`);
  }
  const bpe = trainByteLevelBpe(corpus, { vocabSize: vocabSize - DEMO_SPECIAL_TOKENS.length, specialTokens: DEMO_SPECIAL_TOKENS });
  const base = bpe.vocab.size;
  const ids = { endoftext: base, imStart: base + 1, imEnd: base + 2 };

  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(
      DEMO_SPECIAL_TOKENS.map((content, i) => [String(base + i), { ...specialEntry(content), special: true }]),
    ),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    // GPT-2's convention: <|endoftext|> doubles as bos and unk. Never added
    // (add_bos_token false), but it gives `pad: auto` a real non-EOS token.
    bos_token: '<|endoftext|>',
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    model_max_length: 2048,
    pad_token: null,
    padding_side: 'left',
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: '<|endoftext|>',
  };
  const specialTokensMap = {
    additional_special_tokens: [specialEntry('<|im_start|>'), specialEntry('<|im_end|>')],
    bos_token: specialEntry('<|endoftext|>'),
    eos_token: specialEntry('<|im_end|>'),
    unk_token: specialEntry('<|endoftext|>'),
  };
  const generationConfig = { bos_token_id: ids.endoftext, eos_token_id: ids.imEnd };

  await mkdir(dir, { recursive: true });
  const docs: [string, unknown][] = [
    ['tokenizer.json', demoTokenizerJson(bpe)],
    ['tokenizer_config.json', tokenizerConfig],
    ['special_tokens_map.json', specialTokensMap],
    ['generation_config.json', generationConfig],
  ];
  const files: string[] = [];
  for (const [name, doc] of docs) {
    const file = path.resolve(dir, name);
    writeJsonAtomic(file, doc);
    files.push(file);
  }
  return { vocabSize: base + DEMO_SPECIAL_TOKENS.length, merges: bpe.merges.length, ids, files };
}
