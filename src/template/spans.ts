/**
 * Where each assistant turn lies in the rendered text, for any template,
 * located without changing what the template sees, and verified per example.
 *
 * A turn is everything the template renders for an assistant message after
 * the generation prompt: reasoning, content, tool-call text and the closing
 * token(s). Methods, in order:
 *
 * 1. `{% generation %}` blocks (templates that have them): the blocks are the
 *    spans, as transformers' `return_assistant_tokens_mask` defines them.
 * 2. Prefix renders: with P = render(messages[:i], add_generation_prompt)
 *    and F = render(messages[:j+1]) (j = i, or the last of a run of
 *    consecutive assistant messages the template may merge), the turn is
 *    F minus P — provided P is a prefix of F and F a prefix of the full
 *    render, which is checked. A run is merged only when none of its
 *    messages is located alone, and split again where the template prints
 *    the generation prompt between its messages (the header is masked). This is what an inference runtime sees: the
 *    prompt P, then what the model must generate.
 * 3. Content sentinels, for turns where (2) fails (templates that drop the
 *    reasoning of earlier turns, gpt-oss' `<|end|>` vs `<|return|>`,
 *    Mistral's system prompt in the last user turn): non-empty string
 *    content is wrapped in private-use characters; the render minus them
 *    must equal the plain render. The turn then starts at P when P is a
 *    prefix of the full render (else at the content) and ends at the
 *    content's end; the label builder adds the closing token(s) after it.
 *    Null or empty content is never wrapped, so templates' `if content`
 *    branches see what the data says.
 * A turn no method locates makes the example fail with `span_not_found`.
 */
import { ChatsftError } from '../errors.js';
import type { Conversation, Message } from '../data/conversations.js';
import { isPySpace, pyStrip } from './jinja-compat.js';
import {
  CONTENT_CLOSE,
  CONTENT_OPEN,
  GEN_CLOSE,
  GEN_OPEN,
  SENTINEL_RE,
  renderWith,
  templateFor,
  type ChatTemplate,
  type TemplateVars,
} from './render.js';

export type SpanMethod = 'native' | 'generation' | 'prefix' | 'sentinel';

/** One assistant turn in the rendered text (UTF-16 indices). */
export interface AssistantSpan {
  /** Index of the (first) message of the turn in conversation.messages. */
  messageIndex: number;
  /** All messages of the turn: more than one when consecutive assistant messages form one turn. */
  messageIndices: number[];
  /** First character the model generates for this turn (after the generation prompt). */
  start: number;
  /**
   * End of what the template renders for the turn (exclusive). When
   * `closed` is false the span ends with the content and the closing
   * token(s) that follow still belong to the turn.
   */
  end: number;
  closed: boolean;
  /**
   * Open spans only: text the template renders after the content (tool-call
   * text) may precede the closing token, so the closing is the first token
   * that closes other turns, not necessarily the next one.
   */
  toCloser?: boolean;
  method: SpanMethod;
  /** `{% generation %}` blocks of this turn, [start, end) each; supervised as transformers' assistant mask. */
  blocks?: Array<[number, number]>;
  /** Where the message's reasoning text was found in the turn, if it has any. */
  reasoning?: [number, number];
  /** The message has reasoning that the template did not render (earlier turns of Qwen3, DeepSeek-R1, …). */
  reasoningDropped?: boolean;
  /** The message carries tool calls. */
  toolCalls: boolean;
  /** The template prints none of this message's content (only its tool call, or nothing). */
  contentDropped?: boolean;
}

export interface RenderedChat {
  text: string;
  spans: AssistantSpan[];
  /** The generation prompt text (what add_generation_prompt appends), when known: its special tokens open turns. */
  generationPrompt: string | undefined;
}

/** Why spans could not be established for one example. */
export class SpanError extends ChatsftError {
  constructor(message: string, where?: string) {
    super('TEMPLATE_SPAN', message, where);
  }
}

export function templateWhere(template: ChatTemplate): string {
  return template.origin === 'file' ? (template.path ?? 'template') : `${template.origin} chat template`;
}

export function templateProblem(template: ChatTemplate, message: string): ChatsftError {
  return new SpanError(message, templateWhere(template));
}

function strip(marked: string, open: string, close: string): { text: string; opens: number[]; closes: number[]; order: string } {
  let text = '';
  const opens: number[] = [];
  const closes: number[] = [];
  let order = '';
  let last = 0;
  for (let i = 0; i < marked.length; i++) {
    const ch = marked[i];
    if (ch === open || ch === close) {
      text += marked.slice(last, i);
      last = i + 1;
      if (ch === open) opens.push(text.length);
      else closes.push(text.length);
      order += ch === open ? '(' : ')';
    }
  }
  text += marked.slice(last);
  return { text, opens, closes, order };
}

function pairs(opens: number[], closes: number[], order: string): Array<[number, number]> | undefined {
  if (opens.length !== closes.length || !/^(\(\))*$/.test(order)) return undefined;
  return opens.map((o, i) => [o, closes[i] as number]);
}

/** Text fields of a message that the template may print. */
export function messageStrings(m: Message): string[] {
  return messageFields(m).map((f) => f.text);
}

/** The same texts with the field each came from (`content`, `reasoning_content`), for messages that name it. */
export function messageFields(m: Message): Array<{ field: string; text: string }> {
  const out: Array<{ field: string; text: string }> = [];
  if (typeof m.content === 'string') out.push({ field: 'content', text: m.content });
  if (typeof m['reasoning_content'] === 'string') out.push({ field: 'reasoning_content', text: m['reasoning_content'] as string });
  return out;
}

/** The reasoning text of a message: `reasoning_content`, or the inside of a leading `<think>…</think>`. */
export function reasoningOf(m: Message): string | undefined {
  const r = m['reasoning_content'];
  if (typeof r === 'string' && pyTrim(r) !== '') return pyTrim(r);
  if (typeof m.content === 'string') {
    const t = /^\s*<think>([\s\S]*?)<\/think>/.exec(m.content);
    if (t && pyTrim(t[1] as string) !== '') return pyTrim(t[1] as string);
  }
  return undefined;
}

function pyTrim(s: string): string {
  return pyStrip(s, undefined, 'both');
}

const generationPrompts = new WeakMap<ChatTemplate, WeakMap<TemplateVars, string>>();

/** Runs of consecutive assistant messages, [first, last] inclusive. */
function assistantRuns(conv: Conversation): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  conv.messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const last = runs[runs.length - 1];
    if (last && last[1] === i - 1) last[1] = i;
    else runs.push([i, i]);
  });
  return runs;
}

/**
 * Render a conversation (no generation prompt) and locate every assistant
 * turn. Throws TEMPLATE_ERROR when the template raises, DATA_INVALID for
 * reserved characters, TEMPLATE_SPAN when a turn cannot be located.
 */
export function renderWithSpans(
  template: ChatTemplate,
  conv: Conversation,
  vars: TemplateVars,
  specials: readonly string[] = [],
): RenderedChat {
  const sp = specialIndex(specials);
  for (const m of conv.messages) {
    for (const s of messageStrings(m)) {
      if (SENTINEL_RE.test(s)) {
        throw new ChatsftError('DATA_INVALID', 'content holds a private-use character U+E000–U+E003 that chatsft reserves');
      }
    }
  }
  const tpl = templateFor(template, conv);
  const text = renderWith(tpl.plain, conv, { vars });
  if (tpl.nativeChatml) return nativeChatmlSpans(conv, text);
  const runs = assistantRuns(conv);
  if (runs.length === 0) return { text, spans: [], generationPrompt: undefined };

  const render = (messages: Message[], agp: boolean): string | undefined => {
    try {
      return renderWith(tpl.plain, { ...conv, messages }, { vars, addGenerationPrompt: agp });
    } catch {
      return undefined; // some templates refuse a prefix (e.g. one that must end with a user turn)
    }
  };
  // render(messages[:n]) is the full render: one render fewer per example.
  const upTos = new Map<number, string | undefined>([[conv.messages.length - 1, text]]);
  /** render(messages[:i+1]) */
  const upTo = (i: number): string | undefined => {
    if (!upTos.has(i)) upTos.set(i, render(conv.messages.slice(0, i + 1), false));
    return upTos.get(i);
  };
  const prompts = new Map<number, string | undefined>();
  const promptBefore = (i: number): string | undefined => {
    if (!prompts.has(i)) prompts.set(i, render(conv.messages.slice(0, i), true));
    return prompts.get(i);
  };
  // The generation prompt (its first special token opens turns): found once per template and variables.
  let byVars = generationPrompts.get(tpl);
  if (!byVars) generationPrompts.set(tpl, (byVars = new WeakMap()));
  let generationPrompt: string | undefined = byVars.get(vars);
  const firstI = (runs[0] as [number, number])[0];
  const p0 = generationPrompt === undefined ? promptBefore(firstI) : undefined;
  const b0 = p0 === undefined ? undefined : render(conv.messages.slice(0, firstI), false);
  // What add_generation_prompt appends (some templates also end a non-prompt render with an eos: compare up to where they differ).
  if (p0 !== undefined && b0 !== undefined) {
    generationPrompt = p0.slice(headerEnd(p0, commonPrefix(p0, b0), specialIndex(specials))) || undefined;
    if (generationPrompt !== undefined) byVars.set(vars, generationPrompt);
  }

  if (tpl.hasGenerationTags) return { text, spans: generationSpans(tpl, conv, vars, text, runs), generationPrompt };

  // One slot per turn: a located span, or the message still to locate.
  const located: Array<{ msg: number; span?: AssistantSpan }> = [];
  for (const [first, last] of runs) {
    // Each message alone first; a run the template merges is one turn.
    const single: Array<AssistantSpan | undefined> = [];
    for (let i = first; i <= last; i++) single.push(prefixSpan(conv, i, i, promptBefore(i), upTo(i), text, sp, generationPrompt));
    if (single.every((x) => x !== undefined)) {
      for (const one of single) located.push({ msg: (one as AssistantSpan).messageIndex, span: one as AssistantSpan });
      continue;
    }
    // A run where some messages are located alone is not merged (gpt-oss prints a turn header
    // between them and only its last message closes with <|return|>): the rest are found below,
    // each a turn of its own, so the header between them is never supervised.
    const merged =
      first < last && single.every((x) => x === undefined)
        ? prefixSpan(conv, first, last, promptBefore(first), upTo(last), text, sp, generationPrompt)
        : undefined;
    if (merged) {
      for (const span of splitAtHeaders(conv, text, merged, generationPrompt, sp)) located.push({ msg: span.messageIndex, span });
      continue;
    }
    for (let i = first; i <= last; i++) {
      const one = single[i - first];
      located.push(one ? { msg: i, span: one } : { msg: i });
    }
  }
  const rendersNothing = (i: number): boolean => {
    const before = render(conv.messages.slice(0, i), false);
    return before !== undefined && before === upTo(i) && text.startsWith(before);
  };
  if (located.some((l) => !l.span)) fillByTurnText(conv, text, located, promptBefore, upTo, sp);
  if (located.some((l) => !l.span)) fillFinalTurn(conv, text, located, generationPrompt, sp);
  if (located.some((l) => !l.span)) fillBySentinels(tpl, conv, vars, text, located, promptBefore, sp, generationPrompt);
  const spans: AssistantSpan[] = [];
  for (const l of located) {
    // A message the template prints nothing for (DeepSeek-R1 skips an assistant message with null content) has no turn.
    if (!l.span && isEmptyMessage(conv.messages[l.msg] as Message) && rendersNothing(l.msg)) continue;
    if (!l.span) {
      throw templateProblem(
        template,
        `cannot locate assistant message ${l.msg} in the rendered text (the prefix renders disagree with the full render, and its content is empty or not printed as given)`,
      );
    }
    spans.push(l.span);
  }
  for (let k = 1; k < spans.length; k++) {
    if ((spans[k] as AssistantSpan).start < (spans[k - 1] as AssistantSpan).end) {
      throw templateProblem(template, 'assistant turns located out of order or overlapping');
    }
  }
  for (const s of spans) annotateReasoning(conv, text, s);
  return { text, spans, generationPrompt };
}

/** Special-token strings, indexed for "does a special token end at position k?". */
interface SpecialIndex {
  set: Set<string>;
  lengths: number[];
}
const specialIndexCache = new WeakMap<readonly string[], SpecialIndex>();
function specialIndex(specials: readonly string[]): SpecialIndex {
  let idx = specialIndexCache.get(specials);
  if (!idx) {
    idx = {
      set: new Set(specials.filter((x) => x.length > 0)),
      lengths: [...new Set(specials.map((x) => x.length))].filter((n) => n > 0).sort((a, b) => b - a),
    };
    specialIndexCache.set(specials, idx);
  }
  return idx;
}

function endsWithSpecial(text: string, k: number, sp: SpecialIndex): string | undefined {
  for (const n of sp.lengths) if (n <= k && sp.set.has(text.slice(k - n, k))) return text.slice(k - n, k);
  return undefined;
}

function startsWithSpecial(text: string, k: number, sp: SpecialIndex): string | undefined {
  for (const n of sp.lengths) if (k + n <= text.length && sp.set.has(text.slice(k, k + n))) return text.slice(k, k + n);
  return undefined;
}

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Back off from `pos` to the end of the last special token or newline at or before it: where a turn header ends. */
function headerEnd(text: string, pos: number, sp: SpecialIndex): number {
  for (let k = pos; k > 0; k--) {
    if (text[k - 1] === '\n' || endsWithSpecial(text, k, sp) !== undefined) return k;
  }
  return 0;
}

/**
 * Text a template prints after the last message whether or not a generation
 * prompt is asked for (Command R7B's tool_use template ends every render
 * with the chatbot header): the common suffix of F and P from its first
 * special token on, less that token (the closer of the last turn, which P
 * has too), when what remains starts with a special token.
 */
function stripTrailer(f: string, p: string, sp: SpecialIndex): string {
  let n = 0;
  while (n < f.length && n < p.length && f.charCodeAt(f.length - 1 - n) === p.charCodeAt(p.length - 1 - n)) n++;
  const tail = f.slice(f.length - n);
  let k = 0;
  while (k < tail.length && startsWithSpecial(tail, k, sp) === undefined) k++;
  const first = startsWithSpecial(tail, k, sp);
  if (first === undefined) return f;
  const rest = tail.slice(k + first.length);
  if (rest && startsWithSpecial(rest, 0, sp) !== undefined) return f.slice(0, f.length - rest.length);
  return f;
}

/**
 * Where the turn starts when the prompt diverges from the render: the
 * header-end backoff can land before the previous message's closing (Hermes
 * renders a tool result's closing differently when it is last). When the
 * prompt's last header (its shortest suffix that starts with a special
 * token, e.g. `<|im_start|>assistant\n`) occurs after that point and before
 * the message's content, the turn starts after it.
 */
function afterLastHeader(f: string, start: number, prompt: string, content: string, sp: SpecialIndex, g?: string): number {
  // The generation prompt intact after the backoff point (the previous turn prints a separator only when not last: Tulu).
  if (g && pyStrip(g, undefined, 'both') !== '') {
    const at = f.indexOf(g, Math.max(0, start - g.length));
    const limit = content ? f.indexOf(content, start) : f.length;
    if (at >= 0 && limit >= 0 && at + g.length <= Math.max(limit, start)) return Math.max(start, at + g.length);
  }
  // The prompt's header may follow in f after whitespace the previous turn prints only when it is not
  // last (Tulu's "\n" after eos): the turn starts after as much of the prompt's tail as f repeats there.
  let ws = start;
  while (ws < f.length && isPySpace(f[ws] as string)) ws++;
  if (ws > start) {
    const m = commonPrefix(prompt.slice(start), f.slice(ws));
    if (m > 0) return ws + m;
  }
  let q: string | undefined;
  for (let k = prompt.length - 1; k >= 0; k--) {
    if (startsWithSpecial(prompt, k, sp) !== undefined) {
      q = prompt.slice(k);
      break;
    }
  }
  if (!q) return start;
  const limit = content ? f.indexOf(content, start) : f.length;
  const at = f.indexOf(q, start);
  if (at < 0 || limit < 0 || at + q.length > limit) return start;
  return at + q.length;
}

/** The answer text of a message every template shows (after any `</think>`), trimmed. */
function visibleContent(m: Message): string {
  let c = typeof m.content === 'string' ? m.content : '';
  if (c.includes('</think>')) c = c.split('</think>').pop() as string;
  return pyTrim(c);
}

/**
 * The turn of messages first..last from P = render(messages[:first],
 * add_generation_prompt) and F = render(messages[:last+1]). The turn starts
 * where P ends; when F does not continue P exactly (a reasoning opener such
 * as `<think>\n` that finished turns lose, or a thinking switch in the
 * prompt), it starts where they diverge, backed off to the end of the
 * header (last special token or newline) — provided no earlier message
 * text is in what P loses. It ends where F ends, which must be a prefix of
 * the full render.
 */
function prefixSpan(
  conv: Conversation,
  first: number,
  last: number,
  prompt: string | undefined,
  upTo: string | undefined,
  full: string,
  sp: SpecialIndex,
  g?: string,
): AssistantSpan | undefined {
  if (prompt === undefined || upTo === undefined) return undefined;
  const f = stripTrailer(upTo, prompt, sp);
  let start = prompt.length;
  if (!f.startsWith(prompt)) {
    start = headerEnd(f, commonPrefix(prompt, f), sp);
    const lost = prompt.slice(start);
    for (const m of conv.messages.slice(0, first)) {
      const c = typeof m.content === 'string' ? pyTrim(m.content) : '';
      if (c && lost.includes(c)) return undefined;
    }
    start = afterLastHeader(f, start, prompt, visibleContent(conv.messages[first] as Message), sp, g);
  }
  if (!full.startsWith(f) || f.length <= start) return undefined;
  const indices = [];
  for (let i = first; i <= last; i++) indices.push(i);
  const turnText = full.slice(start, f.length);
  for (const i of indices) if (!turnText.includes(visibleContent(conv.messages[i] as Message))) return undefined;
  return {
    messageIndex: first,
    messageIndices: indices,
    start,
    end: f.length,
    closed: true,
    method: 'prefix',
    toolCalls: indices.some((i) => hasToolCalls(conv.messages[i] as Message)),
  };
}

/**
 * A run the prefix renders take as one turn may still print the generation
 * prompt (the assistant header) between its messages (Qwen3:
 * `<|im_end|>\n<|im_start|>assistant\n` when neither message renders alone
 * as it does in the run). The header is never supervised (SPEC §4), so the
 * run becomes one turn per message, each ending on its own closing token.
 * Split only when every piece holds its message's content and ends on a
 * special token; otherwise the template really merges them: one turn.
 */
function splitAtHeaders(conv: Conversation, text: string, run: AssistantSpan, g: string | undefined, sp: SpecialIndex): AssistantSpan[] {
  const n = run.messageIndices.length;
  if (n < 2 || !g || pyTrim(g) === '') return [run];
  const cuts: number[] = [];
  for (let k = text.indexOf(g, run.start); k >= 0 && k + g.length <= run.end; k = text.indexOf(g, k + g.length)) cuts.push(k);
  if (cuts.length !== n - 1) return [run];
  const pieces: AssistantSpan[] = [];
  for (let k = 0; k < n; k++) {
    const start = k === 0 ? run.start : (cuts[k - 1] as number) + g.length;
    const end = k < n - 1 ? (cuts[k] as number) : run.end;
    let closer = end;
    while (closer > start && isPySpace(text[closer - 1] as string)) closer--;
    const i = run.messageIndices[k] as number;
    if (!text.slice(start, end).includes(visibleContent(conv.messages[i] as Message)) || endsWithSpecial(text, closer, sp) === undefined)
      return [run];
    const toolCalls = hasToolCalls(conv.messages[i] as Message);
    pieces.push({ messageIndex: i, messageIndices: [i], start, end, closed: true, method: 'prefix', toolCalls });
  }
  return pieces;
}

/** No content (null, absent or ''), no tool calls, no reasoning. */
function isEmptyMessage(m: Message): boolean {
  return (m.content === null || m.content === undefined || m.content === '') && !hasToolCalls(m) && reasoningOf(m) === undefined;
}

/** A turn located only by where it starts: it runs from `start` to the first closing token after it. */
function spanToCloser(msg: number, start: number, toolCalls: boolean): AssistantSpan {
  return { messageIndex: msg, messageIndices: [msg], start, end: start, closed: false, toCloser: true, method: 'sentinel', toolCalls };
}

function hasToolCalls(m: Message): boolean {
  return Array.isArray(m.tool_calls) && m.tool_calls.length > 0;
}

/**
 * The turn's own text T = F minus P (what the template renders for the turn
 * when it ends the conversation), found once in the full render after the
 * previous turn: for turns whose prefix differs in the full render only
 * before them (a template that drops reasoning of turns that are no longer
 * last, e.g. LFM2.5 and Qwen3 for the final turn).
 */
function fillByTurnText(
  conv: Conversation,
  text: string,
  located: Array<{ msg: number; span?: AssistantSpan }>,
  promptBefore: (i: number) => string | undefined,
  upTo: (i: number) => string | undefined,
  sp: SpecialIndex,
): void {
  located.forEach((l, k) => {
    if (l.span) return;
    const p = promptBefore(l.msg);
    const fRaw = upTo(l.msg);
    if (p === undefined || fRaw === undefined) return;
    const f = stripTrailer(fRaw, p, sp);
    if (!f.startsWith(p) || f.length <= p.length) return;
    const turn = f.slice(p.length);
    // The turn text must start at a header end and occur exactly once after the previous turn.
    const from = located[k - 1]?.span?.end ?? 0;
    const at = text.indexOf(turn, from);
    if (at < 0 || text.indexOf(turn, at + 1) >= 0 || headerEnd(text, at, sp) !== at) return;
    const next = located[k + 1]?.span;
    if (next && at + turn.length > next.start) return;
    const toolCalls = hasToolCalls(conv.messages[l.msg] as Message);
    l.span = { messageIndex: l.msg, messageIndices: [l.msg], start: at, end: at + turn.length, closed: true, method: 'prefix', toolCalls };
  });
}

/**
 * The final turn of a conversation that ends with it, when earlier turns
 * render differently in the prefix renders (templates that keep reasoning
 * only on the last assistant turn): it starts after the last generation
 * prompt of the full render and runs to its end.
 */
function fillFinalTurn(
  conv: Conversation,
  text: string,
  located: Array<{ msg: number; span?: AssistantSpan }>,
  generationPrompt: string | undefined,
  sp: SpecialIndex,
): void {
  const k = located.length - 1;
  const l = located[k];
  if (!l || l.span || !generationPrompt || l.msg !== conv.messages.length - 1) return;
  const at = text.lastIndexOf(generationPrompt);
  const start = at + generationPrompt.length;
  const prevEnd = located[k - 1]?.span?.end ?? 0;
  if (at < 0 || at < prevEnd || start >= text.length) return;
  const m = conv.messages[l.msg] as Message;
  if (!text.slice(start).includes(visibleContent(m))) return;
  // The render's last special token must close the turn; trailing whitespace is not generated.
  let end = text.length;
  while (end > start && isPySpace(text[end - 1] as string)) end--;
  if (endsWithSpecial(text, end, sp) === undefined) return;
  l.span = {
    messageIndex: l.msg,
    messageIndices: [l.msg],
    start,
    end: text.length,
    closed: true,
    method: 'prefix',
    toolCalls: hasToolCalls(m),
  };
}

/** The content sentinels, outside or (for templates that trim content) inside its outer whitespace. */
function wrapContent(content: string, inner: boolean): string {
  if (!inner) return CONTENT_OPEN + content + CONTENT_CLOSE;
  // Python's whitespace: templates trim with Python semantics (jinja-compat.ts).
  const core = pyTrim(content);
  const lead = content.slice(0, content.indexOf(core));
  return lead + CONTENT_OPEN + core + CONTENT_CLOSE + content.slice(lead.length + core.length);
}

function fillBySentinels(
  tpl: ChatTemplate,
  conv: Conversation,
  vars: TemplateVars,
  text: string,
  located: Array<{ msg: number; span?: AssistantSpan }>,
  promptBefore: (i: number) => string | undefined,
  sp: SpecialIndex,
  g: string | undefined,
): void {
  const todo = located.filter((l) => !l.span);
  /** Where turn i starts in the full render: after its prompt, or where the prompt diverges, backed off to the header end. */
  const startOf = (i: number, limit: number): number | undefined => {
    const prompt = promptBefore(i);
    if (prompt === undefined) return undefined;
    if (text.startsWith(prompt)) return prompt.length <= limit ? prompt.length : undefined;
    let start = headerEnd(text, commonPrefix(prompt, text), sp);
    const lost = prompt.slice(start);
    for (const m of conv.messages.slice(0, i)) {
      const c = typeof m.content === 'string' ? pyTrim(m.content) : '';
      if (c && lost.includes(c)) return undefined;
    }
    start = afterLastHeader(text, start, prompt, visibleContent(conv.messages[i] as Message), sp, g);
    return start <= limit ? start : undefined;
  };
  // An empty turn (no content, no tool calls, no reasoning) renders nothing
  // but its closing: it starts where its prompt ends.
  for (const l of todo) {
    const m = conv.messages[l.msg] as Message;
    const empty = (m.content === null || m.content === undefined || m.content === '') && reasoningOf(m) === undefined;
    const start = startOf(l.msg, text.length);
    // Even with no content the template may print channel markup before the closer (harmony).
    if (empty && start !== undefined) l.span = spanToCloser(l.msg, start, hasToolCalls(m));
  }
  const wrapped = todo
    .filter((l) => !l.span)
    .map((l) => l.msg)
    .filter((i) => {
      const c = (conv.messages[i] as Message).content;
      return typeof c === 'string' && pyTrim(c) !== '';
    });
  // A turn whose content the template does not print at all (gpt-oss and
  // Llama 3.1 keep only the tool call of a turn that also has text): it
  // starts after its prompt and ends on the first closer after it.
  const dropped = (): void => {
    for (const l of todo) {
      // Only a turn that calls a tool: the call is what the template prints for it.
      if (l.span || !hasToolCalls(conv.messages[l.msg] as Message)) continue;
      const start = startOf(l.msg, text.length);
      if (start === undefined) continue;
      l.span = { ...spanToCloser(l.msg, start, true), contentDropped: true };
    }
  };
  if (wrapped.length === 0) return dropped(); // null/empty content is never wrapped
  for (const inner of [false, true]) {
    const messages = conv.messages.map((m, i) => (wrapped.includes(i) ? { ...m, content: wrapContent(m.content as string, inner) } : m));
    let marked: string;
    try {
      marked = renderWith(tpl.plain, { ...conv, messages }, { vars });
    } catch {
      continue;
    }
    const s = strip(marked, CONTENT_OPEN, CONTENT_CLOSE);
    // Reasoning templates split content at `</think>`, which can cut the
    // open sentinel off; the close sentinel still marks where content ends.
    if (s.text !== text || s.closes.length !== wrapped.length) {
      if (inner) dropped();
      continue;
    }
    const opens = s.opens.length === wrapped.length ? s.opens : undefined;
    wrapped.forEach((i, k) => {
      if (s.closes[k] === undefined) return;
      const end = s.closes[k] as number;
      const start = startOf(i, end) ?? opens?.[k];
      const slot = located.find((l) => l.msg === i);
      if (start === undefined || !slot) return;
      const toolCalls = hasToolCalls(conv.messages[i] as Message);
      slot.span = { messageIndex: i, messageIndices: [i], start, end, closed: false, toCloser: toolCalls, method: 'sentinel', toolCalls };
    });
    return;
  }
}

function annotateReasoning(conv: Conversation, text: string, span: AssistantSpan): void {
  const reasoning = span.messageIndices.map((i) => reasoningOf(conv.messages[i] as Message)).find((r) => r !== undefined);
  if (reasoning === undefined) return;
  const at = text.indexOf(reasoning, span.start);
  if (at >= 0 && at + reasoning.length <= span.end) span.reasoning = [at, at + reasoning.length];
  else span.reasoningDropped = true;
}

/**
 * `{% generation %}` blocks, assigned to assistant turns in order. A
 * template may print more blocks than turns (LFM2.5 wraps a trailing eos
 * in its own block): a block that follows the last turn's block with no
 * assistant message between belongs to that turn.
 */
function generationSpans(
  tpl: ChatTemplate,
  conv: Conversation,
  vars: TemplateVars,
  text: string,
  runs: Array<[number, number]>,
): AssistantSpan[] {
  const s = strip(renderWith(tpl.marked, conv, { vars }), GEN_OPEN, GEN_CLOSE);
  const found = pairs(s.opens, s.closes, s.order);
  if (s.text !== text || !found) {
    throw templateProblem(tpl, 'the {% generation %} blocks do not render as balanced spans around the assistant output');
  }
  const assistants = runs.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_x, k) => a + k));
  const nonEmpty = found.filter(([a, b]) => b > a);
  if (nonEmpty.length < assistants.length) {
    throw templateProblem(
      tpl,
      `the template renders ${nonEmpty.length} {% generation %} blocks for ${assistants.length} assistant messages`,
    );
  }
  const spans: AssistantSpan[] = [];
  let extra = nonEmpty.length - assistants.length;
  let k = 0;
  for (const [a, b] of nonEmpty) {
    const prev = spans[spans.length - 1];
    const onlyTokens = /^\s*(<\|[^|\s]+\|>|<\/?[A-Za-z_][^<>\s]*>)+\s*$/.test(text.slice(a, b));
    if (prev && extra > 0 && (onlyTokens || k >= assistants.length)) {
      prev.blocks?.push([a, b]);
      prev.end = b;
      extra--;
      continue;
    }
    const i = assistants[k++];
    if (i === undefined) throw templateProblem(tpl, 'more {% generation %} blocks than assistant messages');
    spans.push({
      messageIndex: i,
      messageIndices: [i],
      start: a,
      end: b,
      closed: true,
      method: 'generation',
      blocks: [[a, b]],
      toolCalls: hasToolCalls(conv.messages[i] as Message),
    });
  }
  for (const sp of spans) annotateReasoning(conv, text, sp);
  return spans;
}

/** OpenHermes ChatML rendered natively: the turn is content + `<|im_end|>\n`, as the prefix renders give it (labels stop at `<|im_end|>`). */
function nativeChatmlSpans(conv: Conversation, text: string): RenderedChat {
  const spans: AssistantSpan[] = [];
  let pos = 0;
  conv.messages.forEach((m, i) => {
    const head = '<|im_start|>' + m.role + '\n';
    const start = pos + head.length;
    const end = start + (m.content as string).length + '<|im_end|>\n'.length;
    if (m.role === 'assistant') {
      spans.push({ messageIndex: i, messageIndices: [i], start, end, closed: true, method: 'native', toolCalls: hasToolCalls(m) });
    }
    pos = end;
  });
  return { text, spans, generationPrompt: '<|im_start|>assistant\n' };
}
