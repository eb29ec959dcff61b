/**
 * Labels (SPEC §4): from the rendered text, its assistant spans and the
 * token offsets, mark as supervised each trained assistant turn's content
 * tokens plus the special token that closes the turn (the EOT). Nothing here
 * looks at the pad id.
 */
import { ChatsftError } from '../errors.js';
import { IGNORE_INDEX } from '../batch/types.js';
import type { Conversation } from '../data/conversations.js';
import type { AssistantSpan } from '../template/spans.js';
import { templateProblem } from '../template/spans.js';
import type { TokenizerSetup, TrainOn } from '../tokenize/setup.js';
import { codePointIndexer, sliceCodePoints, withLeadingToken, type Tokens } from '../tokenize/encode.js';

/** One assistant turn in token coordinates. */
export interface Turn {
  messageIndex: number;
  trained: boolean;
  /** First content token (== eot when the content is empty). */
  start: number;
  /** Index of the EOT token; tokens [start, eot] are the supervised range. */
  eot: number;
  eotId: number;
}

export interface Labelled {
  inputIds: number[];
  labels: number[];
  turns: Turn[];
  /** Offsets aligned with inputIds (a BOS added here covers no text). */
  tokens: Tokens;
}

export type LabelResult = { ok: true; value: Labelled } | { ok: false; reason: string; detail: string };

const MAX_GAP = 8; // characters of whitespace allowed between content and EOT (Llama 2's " </s>")

function isWhitespace(s: string): boolean {
  return /^\s*$/.test(s);
}

/** The string the template closes a turn with, for error messages. */
function closingText(text: string, fromCp: number): string {
  const rest = sliceCodePoints(text, fromCp, fromCp + 40);
  return (/^\s*\S+/.exec(rest)?.[0] ?? rest).trim();
}

function isTrained(conv: Conversation, messageIndex: number, trainOn: TrainOn, lastAssistant: number): boolean {
  const flag = conv.messages[messageIndex]?.train;
  if (flag !== undefined) return flag;
  return trainOn !== 'last' || messageIndex === lastAssistant;
}

/**
 * Build input ids and labels for one rendered conversation. Template-level
 * problems (no EOT after assistant content) throw TEMPLATE_SPAN; example
 * level problems (a token straddling the content boundary) return a reason
 * so the caller can count and skip the example.
 */
export function buildLabels(
  setup: TokenizerSetup,
  conv: Conversation,
  text: string,
  spans: AssistantSpan[],
  tokens: Tokens,
  trainOn: TrainOn,
): LabelResult {
  let tok = tokens;
  if (setup.addBos && setup.bosId !== undefined && !(setup.bosToken && text.startsWith(setup.bosToken))) {
    tok = withLeadingToken(tokens, setup.bosId);
  }
  const ids = tok.ids;
  const n = ids.length;
  const labels = new Array<number>(n).fill(IGNORE_INDEX);
  const cp = codePointIndexer(text);
  const textCps = cp(text.length);
  const lastAssistant = spans.length > 0 ? (spans[spans.length - 1] as AssistantSpan).messageIndex : -1;
  const turns: Turn[] = [];
  /** First token at or after code point c that starts at or after `from` (scan fallback for uncovered characters). */
  const tokenFrom = (c: number, from: number): number => {
    if (c >= textCps) return n;
    const hit = tok.tokenAt(c);
    if (hit !== null && hit >= from) return hit;
    let i = from;
    while (i < n && tok.span(i)[1] <= c) i++;
    return i;
  };

  let t = 0; // token cursor; spans are in text order
  for (const span of spans) {
    const s = cp(span.start);
    const e = cp(span.end);
    let first = tokenFrom(s, t);
    if (first < n && tok.span(first)[0] < s && e > s) {
      // A token began in the header and runs into the content (SentencePiece
      // "▁Blue" after "[/INST] ", or "\n\n" before content starting with
      // "\n"). When the header part is whitespace the token is part of what
      // the model must emit, so it is supervised (as transformers'
      // char-to-token assistant masks do); anything else cannot be exact.
      if (!isWhitespace(sliceCodePoints(text, tok.span(first)[0], s))) {
        return { ok: false, reason: 'token_straddles_content', detail: `message ${span.messageIndex}: a token crosses the start of assistant content` };
      }
    }
    // k: first token starting at or after the span end.
    let k = e === s ? first : tokenFrom(e, first);
    if (k < n && tok.span(k)[0] < e) k++;
    if (e === s) first = k; // empty content: the turn is just its EOT
    let eot = -1;
    if (span.generation && k > first && setup.specialIds.has(ids[k - 1] as number)) {
      eot = k - 1; // the generation block includes its EOT
    } else {
      // Whitespace may sit between content and EOT (Llama 2's " </s>"); a
      // content token may run into it. Both are supervised with the EOT.
      let j = k;
      while (j < n && !setup.specialIds.has(ids[j] as number)) j++;
      const gapEnd = j < n ? tok.span(j)[0] : Number.MAX_SAFE_INTEGER;
      const gap = j < n ? sliceCodePoints(text, e, gapEnd) : '';
      if (j >= n || gap.length > MAX_GAP || !isWhitespace(gap)) {
        const closing = closingText(text, e);
        if (closing && /^<[^<>\s]+>$|^<\|[^|]+\|>$|^\[[^\]\s]+\]$/.test(closing)) {
          throw templateProblem(
            setup.template,
            `EOT_NOT_SINGLE_TOKEN: the template closes assistant turns with '${closing}', which is not one special token in this vocabulary ` +
              '(add it as a special token, or use a template whose turn end is one)',
          );
        }
        throw templateProblem(
          setup.template,
          `TEMPLATE_NO_EOT: the template does not close assistant turns with a special token (after the content comes ${JSON.stringify(
            closing || '(end of text)',
          )}); a model trained on it cannot learn to stop`,
        );
      }
      eot = j;
    }
    const trained = isTrained(conv, span.messageIndex, trainOn, lastAssistant);
    turns.push({ messageIndex: span.messageIndex, trained, start: first, eot, eotId: ids[eot] as number });
    if (trained) for (let i = first; i <= eot; i++) labels[i] = ids[i] as number;
    t = eot + 1;
  }

  if (trainOn === 'all') {
    // Everything but padding, except assistant turns switched off by their flag.
    const off = new Uint8Array(n);
    for (const turn of turns) if (!turn.trained) for (let i = turn.start; i <= turn.eot; i++) off[i] = 1;
    for (let i = 0; i < n; i++) if (!off[i]) labels[i] = ids[i] as number;
  }
  return { ok: true, value: { inputIds: ids, labels, turns, tokens: tok } };
}

/**
 * The invariants of SPEC §4 on one labelled conversation; throws
 * LABELS_INVARIANT naming the broken one. Cheap enough to run on every row.
 */
export function checkInvariants(l: Labelled, trainOn: TrainOn, where?: string): void {
  const fail = (msg: string): never => {
    throw new ChatsftError('LABELS_INVARIANT', msg, where);
  };
  if (l.inputIds.length !== l.labels.length) fail('input_ids and labels differ in length');
  const inTurn = new Uint8Array(l.inputIds.length);
  for (const turn of l.turns) {
    if (!turn.trained) continue;
    // 1. the EOT of every trained turn is supervised.
    if (l.labels[turn.eot] !== l.inputIds[turn.eot]) fail(`invariant 1: the EOT of message ${turn.messageIndex} is not supervised`);
    // 4. every token from the content's first to the EOT is supervised: tokens
    // tile the text, so they decode to the rendered content (+ whitespace) + EOT.
    for (let i = turn.start; i <= turn.eot; i++) {
      inTurn[i] = 1;
      if (l.labels[i] !== l.inputIds[i]) fail(`invariant 4: token ${i} of message ${turn.messageIndex} is not supervised`);
    }
  }
  for (let i = 0; i < l.labels.length; i++) {
    const lab = l.labels[i] as number;
    if (lab !== IGNORE_INDEX && lab !== l.inputIds[i]) fail(`label ${i} is neither -100 nor the input id`);
    // 2. under train_on assistant/last nothing outside a trained turn is supervised.
    if (trainOn !== 'all' && lab !== IGNORE_INDEX && !inTurn[i]) fail(`invariant 2: token ${i} is supervised outside an assistant turn`);
  }
}
