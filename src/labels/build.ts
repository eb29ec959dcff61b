/**
 * Labels (SPEC §4): from the rendered text, its assistant spans and the
 * token offsets, mark as supervised each trained assistant turn's content
 * tokens plus the special token(s) that close the turn (the EOT). Nothing here
 * looks at the pad id.
 */
import { ChatsftError } from '../errors.js';
import { IGNORE_INDEX, type DropReason, type LabelledExample, type Turn } from './types.js';
import type { Conversation } from '../data/conversations.js';
import type { AssistantSpan, RenderedChat } from '../template/spans.js';
import type { TokenizerSetup, TrainOn } from '../tokenize/setup.js';
import { codePointIndexer, sliceCodePoints, withLeadingToken, type Tokens } from '../tokenize/encode.js';

export { TEMPLATE_REASONS, type DropReason, type LabelledExample, type Turn } from './types.js';

export type LabelResult = { ok: true; value: Omit<LabelledExample, 'line' | 'text'> } | { ok: false; reason: DropReason; detail: string };

const MAX_GAP = 8; // characters of whitespace allowed between content and EOT (Llama 2's " </s>")

function isWhitespace(s: string): boolean {
  return /^\s*$/.test(s);
}

function isTrained(conv: Conversation, messageIndex: number, trainOn: TrainOn, lastAssistant: number): boolean {
  const flag = conv.messages[messageIndex]?.train;
  if (flag !== undefined) return flag;
  return trainOn !== 'last' || messageIndex === lastAssistant;
}

const openerCache = new WeakMap<TokenizerSetup, Map<string, Set<number>>>();

/**
 * The special token that opens the generation prompt (`<|im_start|>`,
 * `<|start_header_id|>`, `<start_of_turn>`, harmony's `<|start|>`): the next
 * turn's header, so never part of a closing sequence. Only the first one:
 * later specials of the prompt (`<think>`, `<|end_header_id|>`) also occur
 * inside turns.
 */
function openerIds(setup: TokenizerSetup, prompt: string | undefined): Set<number> {
  if (!prompt) return new Set();
  let bySetup = openerCache.get(setup);
  if (!bySetup) openerCache.set(setup, (bySetup = new Map()));
  let ids = bySetup.get(prompt);
  if (!ids) {
    ids = new Set();
    let best: { at: number; id: number } | undefined;
    const consider = (content: string, id: number): void => {
      const at = prompt.indexOf(content);
      if (at >= 0 && (!best || at < best.at || (at === best.at && content.length > 0))) best = { at, id };
    };
    for (const t of setup.folder.addedTokens) if (t.special) consider(t.content, t.id);
    for (const t of setup.addedTokens) consider(t.content, t.id);
    if (best) ids.add(best.id);
    bySetup.set(prompt, ids);
  }
  return ids;
}

/**
 * Build input ids and labels for one rendered conversation. Every problem
 * is a drop reason for this example; nothing throws for one bad line.
 */
export function buildLabels(
  setup: TokenizerSetup,
  conv: Conversation,
  rendered: RenderedChat,
  tokens: Tokens,
  trainOn: TrainOn,
): LabelResult {
  const { text, spans } = rendered;
  let tok = tokens;
  if (setup.addBos && setup.bosId !== undefined && !(setup.bosToken && text.startsWith(setup.bosToken))) {
    tok = withLeadingToken(tokens, setup.bosId);
  }
  const ids = tok.ids;
  const n = ids.length;
  const labels = new Array<number>(n).fill(IGNORE_INDEX);
  const cp = codePointIndexer(text);
  const textCps = cp(text.length);
  const special = (i: number): boolean => i >= 0 && i < n && setup.specialIds.has(ids[i] as number);
  const openers = openerIds(setup, rendered.generationPrompt);
  const lastSpan = spans[spans.length - 1];
  const lastAssistant = lastSpan ? (lastSpan.messageIndices[lastSpan.messageIndices.length - 1] as number) : -1;
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
  /** Last token that starts before code point c. */
  const tokenBefore = (c: number, from: number): number => {
    let k = tokenFrom(c, from);
    if (k < n && tok.span(k)[0] < c) k++;
    return k - 1;
  };
  /** After token k-1: whitespace (at most MAX_GAP) then a run of non-opener special tokens; returns the last, or -1. */
  const closingRunFrom = (k: number, fromCp: number): number => {
    let j = k;
    while (j < n && !special(j)) j++;
    if (j >= n) return -1;
    const gap = sliceCodePoints(text, fromCp, tok.span(j)[0]);
    if (gap.length > MAX_GAP || !isWhitespace(gap) || openers.has(ids[j] as number)) return -1;
    // Where other turns of this example show what closes a turn, only that does.
    if (closers.size > 0 && !closers.has(ids[j] as number) && !endsTurn(j)) return -1;
    return j;
  };
  const where = (span: AssistantSpan): string => `message ${span.messageIndex}`;
  // Ids that close the turns located exactly (prefix renders): an open turn
  // whose tool-call text follows its content ends on the first of these.
  const closers = new Set<number>();
  for (const span of spans) {
    if (!span.closed) continue;
    const e = cp(span.end);
    let i = tokenBefore(e, 0);
    while (i >= 0 && tok.span(i)[1] > cp(span.start) && !special(i)) i--;
    while (i >= 0 && tok.span(i)[1] > cp(span.start) && special(i)) closers.add(ids[i--] as number);
  }
  /** Extend a closing sequence over adjacent tokens that close other turns (`<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`). */
  const extendClosing = (j: number): number => {
    while (j + 1 < n && closers.has(ids[j + 1] as number) && tok.span(j + 1)[0] === tok.span(j)[1]) j++;
    return j;
  };
  /** Token j is followed (after whitespace) by the next turn's header or the end of the text: it ends this turn. */
  const endsTurn = (j: number): boolean => {
    let k = j + 1;
    while (k < n && !special(k) && isWhitespace(sliceCodePoints(text, tok.span(k)[0], tok.span(k)[1]))) k++;
    return k >= n || openers.has(ids[k] as number);
  };
  /** From token k on, skipping tool-call text, to the first closer (never past the next turn's header); -1 if none. */
  const scanToCloser = (k: number): number => {
    for (let j = k; j < n; j++) {
      const id = ids[j] as number;
      if (!special(j)) continue;
      if (openers.has(id)) return -1;
      if (closers.size === 0 || closers.has(id) || endsTurn(j)) return extendClosing(j);
    }
    return -1;
  };

  let t = 0; // token cursor; spans are in text order
  for (const span of spans) {
    const s = cp(span.start);
    const e = cp(span.end);
    let first = tokenFrom(s, t);
    let straddled = false;
    const ranges: Array<[number, number]> = [];
    let eot = -1;
    if (span.method === 'generation' && span.blocks) {
      // transformers: tokens from char_to_token(start) to char_to_token(end - 1), per block.
      for (const [a, b] of span.blocks) {
        if (b <= a) continue;
        let ta = tokenFrom(cp(a), t);
        if (ta < n && tok.span(ta)[0] < cp(a)) {
          // A token holding header text and the block's first characters: masked, as below.
          ta++;
          straddled = true;
        }
        const tb = tokenBefore(cp(b), ta);
        if (ta <= tb) ranges.push([ta, tb]);
      }
      const lastRange = ranges[ranges.length - 1];
      if (!lastRange) return { ok: false, reason: 'span_not_found', detail: `${where(span)}: the {% generation %} block covers no token` };
      first = (ranges[0] as [number, number])[0];
      for (let i = lastRange[1]; i >= first && eot < 0; i--) if (special(i) && !openers.has(ids[i] as number)) eot = i;
      if (eot < 0) {
        // EOT right after the block.
        eot = closingRunFrom(lastRange[1] + 1, cp(span.end));
        if (eot >= 0) eot = extendClosing(eot);
        if (eot >= 0) ranges.push([lastRange[1] + 1, eot]);
      }
    } else {
      if (first < n && tok.span(first)[0] < s) {
        // One token holds the end of the header and the start of the reply
        // (Phi-3's chat tokens, byte-level ":\n\n", plain-text "[/INST]"): the
        // model never generates it after the inference prompt, so it is
        // masked and supervision starts at the next token.
        first++;
        straddled = true;
      }
      if (span.closed) {
        const last = tokenBefore(e, first);
        for (let i = last; i >= first && eot < 0; i--) if (special(i)) eot = i;
        if (eot >= 0 && !isWhitespace(sliceCodePoints(text, tok.span(eot)[1], e))) eot = -1;
      } else {
        // Content ends at e; the closing token(s) follow.
        const k = tokenBefore(e, first) + 1;
        eot = closingRunFrom(k, e);
        if (eot >= 0) eot = extendClosing(eot);
        if (eot < 0 && span.toCloser) eot = scanToCloser(Math.max(k, first));
      }
      if (eot >= 0) ranges.push([Math.min(first, eot), eot]);
    }
    if (eot < 0) {
      const after = sliceCodePoints(text, e, e + 30);
      return {
        ok: false,
        reason: 'eot_not_found',
        detail: `${where(span)}: the turn is not closed by a special token (after it comes ${JSON.stringify(after || '(end of text)')})`,
      };
    }
    first = Math.min(first, eot);
    let c0 = eot;
    while (c0 - 1 >= first && special(c0 - 1) && !openers.has(ids[c0 - 1] as number) && tok.span(c0 - 1)[1] === tok.span(c0)[0]) c0--;
    const trained = span.messageIndices.some((i) => isTrained(conv, i, trainOn, lastAssistant));
    const turn: Turn = {
      messageIndex: span.messageIndex,
      messageIndices: span.messageIndices,
      trained,
      start: first,
      eot,
      eotId: ids[eot] as number,
      closing: ids.slice(c0, eot + 1),
      ranges,
      straddled,
      toolCalls: span.toolCalls,
      reasoningDropped: span.reasoningDropped ?? false,
    };
    if (span.reasoning) {
      const ra = tokenFrom(cp(span.reasoning[0]), first);
      turn.reasoning = [ra, Math.max(ra, tokenBefore(cp(span.reasoning[1]), ra))];
    }
    turns.push(turn);
    if (trained) for (const [a, b] of ranges) for (let i = a; i <= b; i++) labels[i] = ids[i] as number;
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
export function checkInvariants(l: Pick<LabelledExample, 'inputIds' | 'labels' | 'turns'>, trainOn: TrainOn, where?: string): void {
  const fail = (msg: string): never => {
    throw new ChatsftError('LABELS_INVARIANT', msg, where);
  };
  if (l.inputIds.length !== l.labels.length) fail('input_ids and labels differ in length');
  const inTurn = new Uint8Array(l.inputIds.length);
  for (const turn of l.turns) {
    if (!turn.trained) continue;
    // 1. the EOT of every trained turn is supervised.
    if (l.labels[turn.eot] !== l.inputIds[turn.eot]) fail(`invariant 1: the EOT of message ${turn.messageIndex} is not supervised`);
    // 4. every token of the turn's ranges is supervised: tokens tile the
    // text, so they decode to what the template rendered for the turn + EOT.
    for (const [a, b] of turn.ranges) {
      for (let i = a; i <= b; i++) {
        inTurn[i] = 1;
        if (l.labels[i] !== l.inputIds[i]) fail(`invariant 4: token ${i} of message ${turn.messageIndex} is not supervised`);
      }
    }
  }
  for (let i = 0; i < l.labels.length; i++) {
    const lab = l.labels[i] as number;
    if (lab !== IGNORE_INDEX && lab !== l.inputIds[i]) fail(`label ${i} is neither -100 nor the input id`);
    // 2. under train_on assistant/last nothing outside a trained turn is supervised.
    if (trainOn !== 'all' && lab !== IGNORE_INDEX && !inTurn[i]) fail(`invariant 2: token ${i} is supervised outside an assistant turn`);
  }
}
