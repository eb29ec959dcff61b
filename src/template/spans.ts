/**
 * Where each assistant turn's content lies in the rendered text, for any
 * template, verified per example.
 *
 * - Templates with `{% generation %}` blocks: the blocks are the spans.
 * - Otherwise each assistant content is wrapped in private-use sentinels
 *   before rendering. The render with sentinels stripped must equal the
 *   plain render, which proves the sentinels mark exactly the characters the
 *   template printed for that content. Templates that trim content (Llama 3,
 *   Gemma) fail that check when content has outer whitespace, so a second
 *   attempt puts the sentinels inside the whitespace.
 * Anything else fails with TEMPLATE_SPAN: no guessing.
 */
import { ChatsftError } from '../errors.js';
import type { Conversation, Message } from '../data/conversations.js';
import {
  CONTENT_CLOSE,
  CONTENT_OPEN,
  GEN_CLOSE,
  GEN_OPEN,
  SENTINEL_RE,
  renderWith,
  type ChatTemplate,
  type TemplateVars,
} from './render.js';

/** One assistant message's span in the rendered text (UTF-16 indices). */
export interface AssistantSpan {
  /** Index of the message in conversation.messages. */
  messageIndex: number;
  start: number;
  end: number;
  /** True when the span came from a generation block (it may hold the EOT). */
  generation: boolean;
}

export interface RenderedChat {
  text: string;
  spans: AssistantSpan[];
}


function assistantIndices(conv: Conversation): number[] {
  const out: number[] = [];
  conv.messages.forEach((m, i) => {
    if (m.role === 'assistant') out.push(i);
  });
  return out;
}

/** Strip sentinels, recording where each open/close sentinel stood in the stripped text. */
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

function withContent(conv: Conversation, wrap: (m: Message) => string): Conversation {
  return { ...conv, messages: conv.messages.map((m) => (m.role === 'assistant' ? { ...m, content: wrap(m) } : m)) };
}

function wrapOuter(m: Message): string {
  return CONTENT_OPEN + m.content + CONTENT_CLOSE;
}

function wrapInner(m: Message): string {
  const lead = /^\s*/.exec(m.content)?.[0] ?? '';
  const core = m.content.trim();
  const trail = m.content.slice(lead.length + core.length);
  return lead + CONTENT_OPEN + core + CONTENT_CLOSE + trail;
}

export function templateProblem(template: ChatTemplate, message: string): ChatsftError {
  const where = template.origin === 'file' ? (template.path ?? 'template') : `${template.origin} chat template`;
  return new ChatsftError('TEMPLATE_SPAN', message, where);
}

/**
 * Render a conversation (without generation prompt) and locate every
 * assistant message's content. Throws TEMPLATE_SPAN when the spans cannot
 * be established exactly.
 */
export function renderWithSpans(template: ChatTemplate, conv: Conversation, vars: TemplateVars): RenderedChat {
  for (const m of conv.messages) {
    if (SENTINEL_RE.test(m.content)) {
      throw new ChatsftError('DATA_INVALID', 'content holds a private-use character U+E000–U+E003 that chatsft reserves');
    }
  }
  const assistants = assistantIndices(conv);
  if (template.contentTransparent && !template.hasGenerationTags && assistants.length > 0) {
    // Proven once for the template: the marked render minus sentinels is the plain render.
    const s = strip(renderWith(template.plain, withContent(conv, wrapOuter), { vars }), CONTENT_OPEN, CONTENT_CLOSE);
    const found = pairs(s.opens, s.closes, s.order);
    if (found && found.length === assistants.length) {
      return {
        text: s.text,
        spans: found.map(([start, end], k) => ({ messageIndex: assistants[k] as number, start, end, generation: false })),
      };
    }
  }
  const plain = renderWith(template.plain, conv, { vars });

  if (template.hasGenerationTags) {
    const s = strip(renderWith(template.marked, conv, { vars }), GEN_OPEN, GEN_CLOSE);
    const found = pairs(s.opens, s.closes, s.order);
    if (s.text !== plain || !found) {
      throw templateProblem(template, 'the {% generation %} blocks do not render as balanced spans around the assistant output');
    }
    if (found.length !== assistants.length) {
      throw templateProblem(
        template,
        `the template renders ${found.length} {% generation %} blocks for ${assistants.length} assistant messages`,
      );
    }
    return {
      text: plain,
      spans: found.map(([start, end], k) => ({ messageIndex: assistants[k] as number, start, end, generation: true })),
    };
  }

  if (assistants.length === 0) return { text: plain, spans: [] };
  for (const wrap of [wrapOuter, wrapInner]) {
    const s = strip(renderWith(template.plain, withContent(conv, wrap), { vars }), CONTENT_OPEN, CONTENT_CLOSE);
    const found = pairs(s.opens, s.closes, s.order);
    if (s.text === plain && found && found.length === assistants.length) {
      return {
        text: plain,
        spans: found.map(([start, end], k) => ({ messageIndex: assistants[k] as number, start, end, generation: false })),
      };
    }
  }
  throw templateProblem(
    template,
    'cannot locate assistant content in the rendered text: the template changes or drops assistant content ' +
      '(marked render differs from the plain render); add {% generation %} tags to the template or pass --template chatml',
  );
}
