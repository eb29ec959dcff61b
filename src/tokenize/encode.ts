/**
 * Tokenizing rendered chats with the `tokenizers` binding, keeping offsets.
 * The binding reports offsets in code points; spans from the template are
 * UTF-16 indices, so `toCodePoints` converts them.
 */
import type { Tokenizer } from 'tokenizers';

/**
 * Token ids with offsets fetched on demand. Building the full offset array
 * through N-API (an array per token) costs about 40% of tokenization, while
 * labels need the offsets of a few tokens per turn.
 */
export interface Tokens {
  ids: number[];
  /** Index of the token covering code point `c`, or null (past the end, or a character no token covers). */
  tokenAt(c: number): number | null;
  /** [start, end) of token i in code points. */
  span(i: number): [number, number];
}

/** Tokens over plain offset arrays (tests, and BOS-shifted views). */
export function tokensFromOffsets(ids: number[], offsets: Array<[number, number]>): Tokens {
  return {
    ids,
    tokenAt(c) {
      for (let i = 0; i < offsets.length; i++) {
        const o = offsets[i] as [number, number];
        if (o[0] <= c && c < o[1]) return i;
      }
      return null;
    },
    span: (i) => offsets[i] ?? [0, 0],
  };
}

/** A view with one token (BOS) put in front, covering no text. */
export function withLeadingToken(t: Tokens, id: number): Tokens {
  return {
    ids: [id, ...t.ids],
    tokenAt(c) {
      const i = t.tokenAt(c);
      return i === null ? null : i + 1;
    },
    span: (i) => (i === 0 ? [0, 0] : t.span(i - 1)),
  };
}

/** Encode many texts without adding special tokens (as apply_chat_template does). */
export async function encodeTexts(tokenizer: Tokenizer, texts: string[]): Promise<Tokens[]> {
  if (texts.length === 0) return [];
  const encs = await tokenizer.encodeBatch(texts, { addSpecialTokens: false });
  return encs.map((e) => ({
    ids: e.getIds(),
    tokenAt: (c: number) => e.charToToken(c) ?? null,
    span: (i: number) => {
      const o = e.tokenToChars(i);
      return o ? [o[0], o[1]] : [0, 0];
    },
  }));
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
