/**
 * The one template probe: render a few fixed conversations with the
 * template and tokenizer exactly as training does (same spans, same label
 * builder), and read back how assistant turns end. `doctor`, `eval`,
 * `export` and the stop-id policy all read this instead of each guessing.
 *
 *   const p = await probeTemplate(setup);
 *   p.closings   // [{ kind: 'final', ids: [151645], tokens: ['<|im_end|>'] }, ...]
 *   p.stopIds    // what a runtime must stop on: [151645]
 *   p.turnHeaders // id sequences that open a turn: [[151644]]
 *
 * Closing kinds: `final` (the last assistant turn of a conversation: what a
 * generation ends with), `earlier` (an assistant turn followed by more
 * conversation), `tool_call` (a turn that calls a tool and ends the
 * generation). A runtime stops on the EOT of `final` and `tool_call` turns;
 * an `earlier`-only closer (harmony's `<|end|>`, which ends a message the
 * model continues after) is not a stop id.
 */
import type { Conversation } from '../data/conversations.js';
import { createEncoder, type EncodeResult } from '../labels/encode.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { renderChat } from './render.js';
import { renderWithSpans, templateWhere } from './spans.js';
import { turnHeaderIds, turnHeaderText } from './turn_header.js';

export type ClosingKind = 'final' | 'earlier' | 'tool_call';

export interface TurnClosing {
  kind: ClosingKind;
  /** The closing sequence, ending with the EOT (usually one id). */
  ids: number[];
  tokens: string[];
}

export type ProbeProblemCode = 'TEMPLATE_BROKEN' | 'TEMPLATE_NO_EOT' | 'EOT_NOT_SINGLE_TOKEN';

export interface ProbeProblem {
  code: ProbeProblemCode;
  message: string;
  /** What follows the assistant content in the render (TEMPLATE_NO_EOT), or the closing string that is not one token. */
  closing?: string;
  after?: string;
}

export interface TemplateProbe {
  /** Where the template came from, for messages. */
  template: string;
  /** Set when the template cannot serve training (no turn of the basic probe gets labels). */
  problem: ProbeProblem | undefined;
  /** One entry per kind the template could render. */
  closings: TurnClosing[];
  /** Every id that ends a supervised turn (the last id of each closing sequence). */
  eotIds: number[];
  /** The ids a runtime must stop on (EOT of `final` and `tool_call` turns). */
  stopIds: number[];
  /** What add_generation_prompt appends (e.g. `<|im_start|>assistant\n`), when known. */
  generationPrompt: string | undefined;
  /** Special-token id sequences that open a turn; a generation containing one has run into the next turn. */
  turnHeaders: number[][];
  /** The basic probe as rendered (for the BOS check). */
  text: string | undefined;
  /**
   * Whether the inference prompt (messages before the last assistant turn +
   * generation prompt) tokenizes as a prefix of the training row; when not,
   * the first differing position and the tokens there.
   */
  promptIsPrefix: { ok: true } | { ok: false; at: number; prompt: string[]; row: string[] } | undefined;
  /** The probe's turns had reasoning and the template dropped it from earlier turns. */
  dropsEarlierReasoning: boolean;
}

/** Plain words: every template renders them and no content token can be mistaken for a closer. */
const BASIC: Conversation = {
  messages: [
    { role: 'user', content: 'Hello there.' },
    { role: 'assistant', content: 'Hi! How can I help?' },
  ],
};

const MULTI: Conversation = {
  messages: [
    { role: 'user', content: 'What is 2 + 2?' },
    { role: 'assistant', content: '2 + 2 = 4.' },
    { role: 'user', content: 'And 3 + 3?' },
    { role: 'assistant', content: '3 + 3 = 6.' },
  ],
};

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];

const TOOL_CALL: Conversation = {
  messages: [
    { role: 'user', content: 'Weather in Paris?' },
    {
      // '' rather than null: several real templates (Qwen3, gpt-oss) test `'x' in content`, which raises on None in Python too.
      role: 'assistant',
      content: '',
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }],
    },
  ],
  tools: TOOLS,
};

const REASONING: Conversation = {
  messages: [
    { role: 'user', content: 'What is 2 + 2?' },
    { role: 'assistant', content: '4.', reasoning_content: 'Two plus two is four.' },
    { role: 'user', content: 'And 3 + 3?' },
    { role: 'assistant', content: '6.', reasoning_content: 'Three plus three is six.' },
  ],
};

const TOKEN_LIKE = /^\s*(<\|[^|\s]+\|>|<\/?[A-Za-z_][^<>\s]*>|\[\/?[A-Za-z_][^\]\s]*\])/;

async function encodeOne(setup: TokenizerSetup, conv: Conversation): Promise<EncodeResult | undefined> {
  const [r] = await createEncoder(setup, { trainOn: 'assistant', allowSpecialTokensInContent: true }).encode([
    { conversation: conv, line: 0 },
  ]);
  return r;
}

function closingOf(setup: TokenizerSetup, r: EncodeResult | undefined, kind: ClosingKind, turn: 'first' | 'last'): TurnClosing | undefined {
  if (!r || !r.ok) return undefined;
  const turns = r.example.turns;
  const t = turn === 'first' ? turns[0] : turns[turns.length - 1];
  if (!t) return undefined;
  return { kind, ids: t.closing, tokens: t.closing.map((id) => setup.tokenizer.idToToken(id) ?? `#${id}`) };
}

/** Why the basic probe got no labels, as a template problem. */
function problemOf(setup: TokenizerSetup, r: EncodeResult | undefined): ProbeProblem {
  if (!r) return { code: 'TEMPLATE_BROKEN', message: 'no probe result' };
  if (r.ok) return { code: 'TEMPLATE_BROKEN', message: 'the probe turn has no labels' };
  if (r.reason !== 'eot_not_found') return { code: 'TEMPLATE_BROKEN', message: `${r.reason}: ${r.detail}` };
  // What the template prints after the content of an earlier assistant turn.
  let after = '';
  try {
    const { text, spans } = renderWithSpans(setup.template, MULTI, setup.vars, setup.specialStrings);
    const span = spans[0];
    const content = MULTI.messages[1]?.content as string;
    if (span) {
      const from = text.indexOf(content, span.start) >= 0 ? text.indexOf(content, span.start) + content.length : span.end;
      after = text.slice(from, from + 40);
    }
  } catch {
    // the problem below still says what happened
  }
  const m = TOKEN_LIKE.exec(after);
  if (m) {
    return {
      code: 'EOT_NOT_SINGLE_TOKEN',
      message: `the template closes assistant turns with '${m[1]}', which is not one special token in this vocabulary`,
      closing: m[1] as string,
      after,
    };
  }
  return {
    code: 'TEMPLATE_NO_EOT',
    message: `the template does not close assistant turns with a special token (after the content comes ${JSON.stringify(after || '(end of text)')})`,
    after,
  };
}

function uniq(ids: number[]): number[] {
  return [...new Set(ids)].sort((a, b) => a - b);
}

export async function probeTemplate(setup: TokenizerSetup): Promise<TemplateProbe> {
  const template = templateWhere(setup.template);
  // Some real templates loop over `tools` without a guard (Hermes 3 tool_use, Phi-4-mini) and raise on
  // a conversation without tools, as in Python: probe those with a tool list on every conversation.
  let basic = await encodeOne(setup, BASIC);
  let tools: Conversation['tools'] | undefined;
  if (basic && !basic.ok && basic.reason === 'template_error') {
    const retry = await encodeOne(setup, { ...BASIC, tools: TOOLS });
    if (retry?.ok) [basic, tools] = [retry, TOOLS];
  }
  const conv = (c: Conversation): Conversation => (tools && !c.tools ? { ...c, tools } : c);
  let text: string | undefined;
  let generationPrompt: string | undefined;
  try {
    const rendered = renderWithSpans(setup.template, conv(BASIC), setup.vars, setup.specialStrings);
    text = rendered.text;
    generationPrompt = rendered.generationPrompt;
  } catch {
    text = undefined;
  }
  const closings: TurnClosing[] = [];
  const final = closingOf(setup, basic, 'final', 'last');
  if (!final) {
    return {
      template,
      problem: problemOf(setup, basic),
      closings,
      eotIds: [],
      stopIds: [],
      generationPrompt,
      turnHeaders: [],
      text,
      promptIsPrefix: undefined,
      dropsEarlierReasoning: false,
    };
  }
  closings.push(final);
  const multi = await encodeOne(setup, conv(MULTI));
  const earlier = closingOf(setup, multi, 'earlier', 'first');
  if (earlier) closings.push(earlier);
  const tool = closingOf(setup, await encodeOne(setup, TOOL_CALL), 'tool_call', 'last');
  if (tool) closings.push(tool);
  const reasoning = await encodeOne(setup, conv(REASONING));
  const dropsEarlierReasoning = reasoning?.ok === true && reasoning.example.turns.some((t) => t.reasoningDropped);

  const last = (c: TurnClosing): number => c.ids[c.ids.length - 1] as number;
  const eotIds = uniq(closings.map(last));
  const stopIds = uniq(closings.filter((c) => c.kind !== 'earlier').map(last));

  // Turn headers: the one definition both eval engines share (turn_header.ts): the first
  // token of the generation prompt (<|im_start|>, <|start_header_id|>, <start_of_turn>).
  const headerText = turnHeaderText(setup.template, setup.vars);
  const stops = new Set(eotIds);
  const turnHeaders = turnHeaderIds(
    headerText === null ? [] : (await setup.tokenizer.encode(headerText, null, { addSpecialTokens: false })).getIds(),
  ).filter((h) => !h.some((id) => stops.has(id)));

  return {
    template,
    problem: undefined,
    closings,
    eotIds,
    stopIds,
    generationPrompt,
    turnHeaders,
    text,
    promptIsPrefix: await promptPrefix(setup, basic, tools),
    dropsEarlierReasoning,
  };
}

/** Does the inference prompt tokenize as a prefix of the training row (train/inference mismatch otherwise)? */
async function promptPrefix(
  setup: TokenizerSetup,
  basic: EncodeResult | undefined,
  tools: Conversation['tools'] | undefined,
): Promise<TemplateProbe['promptIsPrefix']> {
  if (!basic || !basic.ok) return undefined;
  let prompt: string;
  try {
    prompt = renderChat(
      setup.template,
      { messages: BASIC.messages.slice(0, -1), ...(tools ? { tools } : {}) },
      { addGenerationPrompt: true, vars: setup.vars },
    );
  } catch {
    return undefined;
  }
  const enc = await setup.tokenizer.encode(prompt, null, { addSpecialTokens: false });
  let ids = enc.getIds();
  if (setup.addBos && setup.bosId !== undefined && !(setup.bosToken && prompt.startsWith(setup.bosToken))) ids = [setup.bosId, ...ids];
  const row = basic.example.inputIds;
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] !== row[i]) {
      const name = (id: number | undefined): string => (id === undefined ? '(end)' : (setup.tokenizer.idToToken(id) ?? `#${id}`));
      return { ok: false, at: i, prompt: ids.slice(i, i + 3).map(name), row: row.slice(i, i + 3).map(name) };
    }
  }
  return { ok: true };
}
