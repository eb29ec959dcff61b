/**
 * Cheap size checks made before tokenizing (issue 10 §6): a 30 MB line used
 * to be tokenized whole (5 GB) only to be dropped as too long.
 *
 * Why the bound is sound: every token of the rendered conversation stands
 * for at most `longest` characters, where `longest` is the length of the
 * longest string in the vocabulary, added tokens included (for byte-level
 * BPE a vocabulary string has one character per byte, and a byte is at
 * least one UTF-16 character's worth of text; for SentencePiece, one per
 * character). Message content is part of the rendered text, so a
 * conversation with more than `longest × max_length` characters of content
 * needs more than `max_length` tokens. The factor 2 covers normalizers that
 * merge characters (NFKC turns `e` + combining accent into `é`).
 * Reasoning in `<think>` blocks is not counted: some templates drop it from
 * earlier turns.
 */
import type { Conversation } from './conversations.js';

/** The part of a tokenizer this needs. */
export interface VocabSource {
  getVocab(withAddedTokens?: boolean | null): Record<string, number>;
}

const SAFETY = 2;
const longestCache = new WeakMap<object, number>();

/** Length of the longest vocabulary string (added tokens included); scanned once per tokenizer (~0.1-0.4 s). */
export function longestToken(tokenizer: VocabSource): number {
  let n = longestCache.get(tokenizer);
  if (n === undefined) {
    n = 1;
    for (const k of Object.keys(tokenizer.getVocab(true))) if (k.length > n) n = k.length;
    longestCache.set(tokenizer, n);
  }
  return n;
}

const THINK = /<think>[\s\S]*?<\/think>/g;

/** Characters of message text certainly rendered: string contents, `<think>` blocks left out. */
export function messageChars(m: { content?: unknown }): number {
  const c = m.content;
  if (typeof c !== 'string') return 0;
  if (!c.includes('<think>')) return c.length;
  let n = c.length;
  for (const t of c.matchAll(THINK)) n -= t[0].length;
  return n;
}

export function contentChars(conv: Conversation): number {
  let n = 0;
  for (const m of conv.messages) n += messageChars(m);
  return n;
}

/**
 * The most content characters `maxTokens` tokens could hold, or undefined
 * when `chars` is small enough that the vocabulary need not be scanned.
 */
export function charBound(tokenizer: VocabSource, maxTokens: number, chars: number): number | undefined {
  // Every vocabulary string has at least one character: below this nothing can be ruled out.
  if (chars <= SAFETY * maxTokens) return undefined;
  return SAFETY * longestToken(tokenizer) * maxTokens;
}

export interface OverLength {
  chars: number;
  bound: number;
}

/** Set when the conversation certainly needs more than `maxTokens` tokens. */
export function certainlyOver(tokenizer: VocabSource, conv: Conversation, maxTokens: number): OverLength | undefined {
  const chars = contentChars(conv);
  const bound = charBound(tokenizer, maxTokens, chars);
  return bound !== undefined && chars > bound ? { chars, bound } : undefined;
}

/**
 * For `truncation: truncate_turns`: the longest prefix of whole messages,
 * ending with an assistant message, whose content fits the bound; every
 * prefix `truncate_turns` could keep lies inside it. Undefined when none.
 */
export function trimToBound(conv: Conversation, bound: number): Conversation | undefined {
  let chars = 0;
  let end = -1;
  for (let i = 0; i < conv.messages.length; i++) {
    const m = conv.messages[i] as Conversation['messages'][number];
    chars += messageChars(m);
    if (chars > bound) break;
    if (m.role === 'assistant') end = i;
  }
  return end < 0 ? undefined : { ...conv, messages: conv.messages.slice(0, end + 1) };
}

/** The token budget a line is checked against before tokenizing, and what it comes from. */
export interface SizeLimit {
  tokens: number;
  /** Words for messages: "max_length 2048" or "the model's max_position_embeddings 4096". */
  name: string;
  /** max_length (an over-length policy applies) or the model's positions (the line can never be used). */
  source: 'max_length' | 'max_position_embeddings';
}

/**
 * max_length when set; else the model's max_position_embeddings from its
 * config.json, so that even without max_length a 30 MB line is not
 * tokenized (no row longer than the positions can be trained on).
 */
export function sizeLimit(
  folder: { modelConfig?: Record<string, unknown> | undefined },
  maxLength: number | undefined,
): SizeLimit | undefined {
  if (maxLength !== undefined) return { tokens: maxLength, name: `max_length ${maxLength}`, source: 'max_length' };
  const p = folder.modelConfig?.['max_position_embeddings'];
  if (typeof p === 'number' && Number.isInteger(p) && p > 0)
    return { tokens: p, name: `the model's max_position_embeddings ${p}`, source: 'max_position_embeddings' };
  return undefined;
}

/** The too_long message of a line over the size bound. */
export function overLengthMessage(over: OverLength, limit: SizeLimit): string {
  return `${over.chars} characters of content, more than ${limit.name} tokens can hold with this vocabulary (at most ${over.bound}); not tokenized`;
}
