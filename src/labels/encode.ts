/**
 * Conversations → labelled examples: render with spans, tokenize (batched,
 * in the tokenizer's own threads), build labels, check the invariants, apply
 * the over-length policy. Example-level problems come back as a drop reason;
 * template-level problems throw.
 */
import { ChatsftError, isChatsftError } from '../errors.js';
import type { Example } from '../batch/types.js';
import type { Conversation } from '../data/conversations.js';
import { renderWithSpans, type RenderedChat } from '../template/spans.js';
import { encodeTexts, type Tokens } from '../tokenize/encode.js';
import { specialMatcher, type SpecialMatcher } from '../tokenize/special.js';
import type { TokenizerSetup, TrainOn } from '../tokenize/setup.js';
import { buildLabels, checkInvariants, type Labelled, type Turn } from './build.js';

export type Truncation = 'drop' | 'truncate_turns';

export interface EncodeOptions {
  trainOn?: TrainOn;
  maxLength?: number;
  truncation?: Truncation;
  allowSpecialTokensInContent?: boolean;
}

export interface EncodedExample {
  ok: true;
  line: number;
  example: Example;
  turns: Turn[];
  /** Whole trailing turns were removed to fit max_length. */
  truncated: boolean;
  labelled: Labelled;
  text: string;
}

export interface DroppedExample {
  ok: false;
  line: number;
  reason: string;
  detail: string;
}

export type EncodeResult = EncodedExample | DroppedExample;

/** Conversations rendered and handed to the tokenizer, not yet labelled. */
export interface Staged {
  pending: Pending[];
  tokens: Promise<Tokens[]>;
}

export interface Encoder {
  setup: TokenizerSetup;
  options: Required<Omit<EncodeOptions, 'maxLength'>> & { maxLength: number | undefined };
  /**
   * Render synchronously and start tokenizing in the tokenizer's threads;
   * the caller can render the next chunk while this one tokenizes.
   */
  start(items: Array<{ conversation: Conversation; line: number }>): Staged;
  finish(staged: Staged): Promise<EncodeResult[]>;
  encode(items: Array<{ conversation: Conversation; line: number }>): Promise<EncodeResult[]>;
}

type Pending = { line: number; conv: Conversation; rendered: RenderedChat } | DroppedExample;

export function createEncoder(setup: TokenizerSetup, opts: EncodeOptions = {}): Encoder {
  const options = {
    trainOn: opts.trainOn ?? 'assistant',
    maxLength: opts.maxLength,
    truncation: opts.truncation ?? 'drop',
    allowSpecialTokensInContent: opts.allowSpecialTokensInContent ?? false,
  } as const;
  const matcher = specialMatcher(setup.specialStrings);

  function start(items: Array<{ conversation: Conversation; line: number }>): Staged {
    const pending = items.map((it) => prepareOne(setup, matcher, options.allowSpecialTokensInContent, it.conversation, it.line));
    const texts: string[] = [];
    for (const p of pending) if (!('ok' in p)) texts.push(p.rendered.text);
    const tokens = encodeTexts(setup.tokenizer, texts);
    tokens.catch(() => undefined); // handled in finish(); avoid an unhandled rejection meanwhile
    return { pending, tokens };
  }

  async function finish(staged: Staged): Promise<EncodeResult[]> {
    const tokens = await staged.tokens;
    let ti = 0;
    const out: EncodeResult[] = [];
    for (const p of staged.pending) {
      if ('ok' in p) {
        out.push(p);
        continue;
      }
      const r = finishOne(setup, options.trainOn, p.conv, p.line, p.rendered, tokens[ti++]!);
      if (!r.ok || options.maxLength === undefined || r.example.inputIds.length <= options.maxLength) {
        out.push(r);
      } else if (options.truncation === 'truncate_turns') {
        out.push(await truncateTurns(setup, options.trainOn, p.conv, p.line, r, options.maxLength));
      } else {
        out.push({ ok: false, line: p.line, reason: 'too_long', detail: `${r.example.inputIds.length} tokens > max_length ${options.maxLength}` });
      }
    }
    return out;
  }
  return { setup, options, start, finish, encode: (items) => finish(start(items)) };
}

function prepareOne(
  setup: TokenizerSetup,
  matcher: SpecialMatcher,
  allowSpecial: boolean,
  conv: Conversation,
  line: number,
): Pending {
  if (!allowSpecial) {
    for (let i = 0; i < conv.messages.length; i++) {
      const found = matcher.find((conv.messages[i] as { content: string }).content);
      if (found !== undefined) {
        return { ok: false, line, reason: 'special_tokens_in_content', detail: `messages[${i}].content contains the special token ${found}` };
      }
    }
  }
  try {
    return { line, conv, rendered: renderWithSpans(setup.template, conv, setup.vars) };
  } catch (e) {
    if (isChatsftError(e) && (e.code === 'TEMPLATE_ERROR' || e.code === 'DATA_INVALID')) {
      return { ok: false, line, reason: e.code === 'TEMPLATE_ERROR' ? 'template_error' : 'invalid', detail: e.message };
    }
    throw e;
  }
}

function finishOne(
  setup: TokenizerSetup,
  trainOn: TrainOn,
  conv: Conversation,
  line: number,
  rendered: RenderedChat,
  tokens: Tokens,
): EncodeResult {
  const r = buildLabels(setup, conv, rendered.text, rendered.spans, tokens, trainOn);
  if (!r.ok) return { ok: false, line, reason: r.reason, detail: r.detail };
  const l = r.value;
  checkInvariants(l, trainOn, `line ${line}`);
  if (!l.labels.some((x) => x !== -100)) {
    return { ok: false, line, reason: 'no_supervised_tokens', detail: 'no assistant turn is trained in this conversation' };
  }
  return {
    ok: true,
    line,
    example: { inputIds: l.inputIds, labels: l.labels, source: line },
    turns: l.turns,
    truncated: false,
    labelled: l,
    text: rendered.text,
  };
}

/**
 * Keep the longest prefix of whole turns that ends with a trained assistant
 * turn and fits; re-rendered rather than cut, so the kept text is exactly
 * what the template renders for the shorter conversation, EOT included.
 */
async function truncateTurns(
  setup: TokenizerSetup,
  trainOn: TrainOn,
  conv: Conversation,
  line: number,
  full: EncodedExample,
  maxLength: number,
): Promise<EncodeResult> {
  const candidates = full.turns.filter((t) => t.eot < maxLength).map((t) => t.messageIndex);
  for (let c = candidates.length - 1; c >= 0; c--) {
    const keep = (candidates[c] as number) + 1;
    const shorter: Conversation = { ...conv, messages: conv.messages.slice(0, keep) };
    let rendered: RenderedChat;
    try {
      rendered = renderWithSpans(setup.template, shorter, setup.vars);
    } catch (e) {
      if (isChatsftError(e) && e.code === 'TEMPLATE_ERROR') continue;
      throw e;
    }
    const [tokens] = await encodeTexts(setup.tokenizer, [rendered.text]);
    if (!tokens) throw new ChatsftError('TOKENIZER_ERROR', 'empty encode result');
    const r = finishOne(setup, trainOn, shorter, line, rendered, tokens);
    if (r.ok && r.example.inputIds.length <= maxLength) return { ...r, truncated: true };
  }
  return { ok: false, line, reason: 'too_long', detail: `${full.example.inputIds.length} tokens > max_length ${maxLength} and no shorter prefix of whole turns fits` };
}
