/**
 * Tokenizing rendered chats with the `tokenizers` binding, keeping offsets.
 * The binding reports offsets in code points; spans from the template are
 * UTF-16 indices, so `toCodePoints` converts them.
 */
import type { Tokenizer } from 'tokenizers';

export interface Tokens {
  ids: number[];
  /** [start, end) of each token in the text, in code points. */
  starts: Int32Array;
  ends: Int32Array;
}

/** Encode many texts without adding special tokens (as apply_chat_template does). */
export async function encodeTexts(tokenizer: Tokenizer, texts: string[]): Promise<Tokens[]> {
  if (texts.length === 0) return [];
  const encs = await tokenizer.encodeBatch(texts, { addSpecialTokens: false });
  return encs.map((e) => {
    const offsets = e.getOffsets();
    const starts = new Int32Array(offsets.length);
    const ends = new Int32Array(offsets.length);
    for (let i = 0; i < offsets.length; i++) {
      const o = offsets[i] as number[];
      starts[i] = o[0] as number;
      ends[i] = o[1] as number;
    }
    return { ids: e.getIds(), starts, ends };
  });
}

const SURROGATE = /[\uD800-\uDBFF]/;

/**
 * A converter from UTF-16 index to code-point index for `text`. Identity
 * when the text has no astral characters (the common case).
 */
export function codePointIndexer(text: string): (utf16: number) => number {
  if (!SURROGATE.test(text)) return (i) => i;
  // prefix[i] = number of high surrogates strictly before UTF-16 index i.
  const prefix = new Int32Array(text.length + 1);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    prefix[i + 1] = (prefix[i] as number) + (c >= 0xd800 && c <= 0xdbff ? 1 : 0);
  }
  return (i) => i - (prefix[i] as number);
}

/** Slice `text` by code-point indices. */
export function sliceCodePoints(text: string, start: number, end: number): string {
  if (!SURROGATE.test(text)) return text.slice(start, end);
  return Array.from(text).slice(start, end).join('');
}
