/**
 * Conversations → labelled examples: render with spans, tokenize (batched,
 * in the tokenizer's own threads), build labels, check the invariants, apply
 * the over-length policy. Example-level problems come back as a drop reason;
 * template-level problems throw.
 */
import { ChatsftError, isChatsftError } from '../errors.js';
import type { Conversation } from '../data/conversations.js';
import { messageFields, renderWithSpans, type RenderedChat } from '../template/spans.js';
import { encodeTexts, type Tokens } from '../tokenize/encode.js';
import { specialMatcher, type SpecialMatcher } from '../tokenize/special.js';
import type { TokenizerSetup, TrainOn } from '../tokenize/setup.js';
import { buildLabels, checkInvariants } from './build.js';
import type { DropReason, LabelledExample } from './types.js';

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
  example: LabelledExample;
  /** Whole trailing turns were removed to fit max_length. */
  truncated: boolean;
}

export interface DroppedExample {
  ok: false;
  line: number;
  reason: DropReason;
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
        out.push({
          ok: false,
          line: p.line,
          reason: 'too_long',
          detail: `${r.example.inputIds.length} tokens > max_length ${options.maxLength}`,
        });
      }
    }
    return out;
  }
  return { setup, options, start, finish, encode: (items) => finish(start(items)) };
}

function prepareOne(setup: TokenizerSetup, matcher: SpecialMatcher, allowSpecial: boolean, conv: Conversation, line: number): Pending {
  if (!allowSpecial) {
    for (let i = 0; i < conv.messages.length; i++) {
      for (const { field, text } of messageFields(conv.messages[i] as Conversation['messages'][number])) {
        const found = matcher.find(text);
        if (found !== undefined) {
          return {
            ok: false,
            line,
            reason: 'special_tokens_in_content',
            detail: `messages[${i}].${field} contains the special token ${found}`,
          };
        }
      }
    }
  }
  try {
    return { line, conv, rendered: renderWithSpans(setup.template, conv, setup.vars, setup.specialStrings) };
  } catch (e) {
    const reason = dropReasonOf(e);
    if (reason) return { ok: false, line, reason, detail: (e as Error).message };
    throw e;
  }
}

/** The drop reason of a per-example error, or undefined for errors that must end the run. */
function dropReasonOf(e: unknown): DropReason | undefined {
  if (!isChatsftError(e)) return undefined;
  if (e.code === 'TEMPLATE_ERROR') return 'template_error';
  if (e.code === 'DATA_INVALID') return 'invalid_data';
  if (e.code === 'TEMPLATE_SPAN') return 'span_not_found';
  return undefined;
}

function finishOne(
  setup: TokenizerSetup,
  trainOn: TrainOn,
  conv: Conversation,
  line: number,
  rendered: RenderedChat,
  tokens: Tokens,
): EncodeResult {
  const r = buildLabels(setup, conv, rendered, tokens, trainOn);
  if (!r.ok) return { ok: false, line, reason: r.reason, detail: r.detail };
  const l = r.value;
  checkInvariants(l, trainOn, `line ${line}`);
  if (!l.labels.some((x) => x !== -100)) {
    return { ok: false, line, reason: 'no_supervised_tokens', detail: 'no assistant turn is trained in this conversation' };
  }
  return { ok: true, line, example: { ...l, line, text: rendered.text }, truncated: false };
}

/**
 * Keep the longest prefix of whole turns that ends with a trained assistant
 * turn and fits; re-rendered rather than cut, so the kept text is exactly
 * what the template renders for the shorter conversation, EOT included.
 *
 * `train_on: last` means the last turn of the example as trained: after
 * truncation that is the last *kept* assistant turn (its context is the
 * original conversation before it). A message's explicit `train` flag still
 * wins, so a kept prefix whose last turn is `train: false` is skipped for a
 * shorter one.
 */
async function truncateTurns(
  setup: TokenizerSetup,
  trainOn: TrainOn,
  conv: Conversation,
  line: number,
  full: EncodedExample,
  maxLength: number,
): Promise<EncodeResult> {
  const candidates = full.example.turns
    .filter((t) => t.eot < maxLength)
    .map((t) => t.messageIndices[t.messageIndices.length - 1] as number);
  for (let c = candidates.length - 1; c >= 0; c--) {
    const keep = (candidates[c] as number) + 1;
    const shorter: Conversation = { ...conv, messages: conv.messages.slice(0, keep) };
    let rendered: RenderedChat;
    try {
      rendered = renderWithSpans(setup.template, shorter, setup.vars, setup.specialStrings);
    } catch (e) {
      if (dropReasonOf(e)) continue;
      throw e;
    }
    const [tokens] = await encodeTexts(setup.tokenizer, [rendered.text]);
    if (!tokens) throw new ChatsftError('TOKENIZER_ERROR', 'empty encode result');
    const r = finishOne(setup, trainOn, shorter, line, rendered, tokens);
    if (r.ok && r.example.inputIds.length <= maxLength) return { ...r, truncated: true };
  }
  return {
    ok: false,
    line,
    reason: 'too_long',
    detail: `${full.example.inputIds.length} tokens > max_length ${maxLength} and no shorter prefix of whole turns fits`,
  };
}
