/**
 * Input conversations (SPEC §3): JSONL, one conversation per line, in the
 * OpenAI `messages` format or ShareGPT `conversations`, detected per line.
 * Files are streamed line by line, never loaded whole.
 */
import { readLines, type ReadLinesOptions } from './read.js';

export type Role = 'system' | 'user' | 'assistant' | 'tool';

export interface Message {
  role: Role;
  /**
   * Text, or `null` (Python `None` to the template, never coerced to ''),
   * or absent (an assistant message that only calls tools may omit it).
   */
  content?: string | null;
  /** Overrides the `train_on` policy for this message. */
  train?: boolean;
  /** Passed through to templates that render tool calls. */
  tool_calls?: unknown[];
  [extra: string]: unknown;
}

export interface Conversation {
  messages: Message[];
  tools?: unknown[];
}

/** A problem with one input line: where it is and what is wrong. */
export interface DataIssue {
  line: number;
  field: string;
  message: string;
}

export type ParsedLine =
  { ok: true; line: number; conversation: Conversation } | { ok: false; line: number; issue: DataIssue } | { ok: 'blank'; line: number };

const ROLES = new Set<Role>(['system', 'user', 'assistant', 'tool']);
const SHAREGPT_ROLES: Record<string, Role> = {
  system: 'system',
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  chatgpt: 'assistant',
  bing: 'assistant',
  bard: 'assistant',
  tool: 'tool',
  function_call: 'assistant',
  observation: 'tool',
  function_response: 'tool',
};

function fail(line: number, field: string, message: string): ParsedLine {
  return { ok: false, line, issue: { line, field, message } };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Parse and validate one JSONL line. Never throws. */
export function parseLine(text: string, line: number): ParsedLine {
  if (text.trim() === '') return { ok: 'blank', line };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return fail(line, '(line)', `invalid JSON: ${(e as Error).message}`);
  }
  if (!isObject(value)) return fail(line, '(line)', 'expected a JSON object');

  const tools = value['tools'];
  if (tools !== undefined && tools !== null && !Array.isArray(tools)) return fail(line, 'tools', 'expected a list');

  if ('messages' in value) {
    const raw = value['messages'];
    if (!Array.isArray(raw)) return fail(line, 'messages', 'expected a list');
    if (raw.length === 0) return fail(line, 'messages', 'empty conversation');
    const messages: Message[] = [];
    for (let i = 0; i < raw.length; i++) {
      const m: unknown = raw[i];
      const at = `messages[${i}]`;
      if (!isObject(m)) return fail(line, at, 'expected an object');
      const role = m['role'];
      if (typeof role !== 'string') return fail(line, `${at}.role`, 'missing or not a string');
      if (!ROLES.has(role as Role)) return fail(line, `${at}.role`, `unknown role '${role}' (expected system, user, assistant or tool)`);
      const content = m['content'];
      const toolCalls = m['tool_calls'];
      if (toolCalls !== undefined && toolCalls !== null && !Array.isArray(toolCalls))
        return fail(line, `${at}.tool_calls`, 'expected a list');
      // null stays null: templates branch on it (`if message.content`), and Python prints it as None.
      if (content === undefined && !Array.isArray(toolCalls)) return fail(line, `${at}.content`, 'missing');
      if (content !== undefined && content !== null && typeof content !== 'string')
        return fail(line, `${at}.content`, 'expected a string or null');
      const reasoning = m['reasoning_content'];
      if (reasoning !== undefined && reasoning !== null && typeof reasoning !== 'string')
        return fail(line, `${at}.reasoning_content`, 'expected a string or null');
      const train = m['train'];
      if (train !== undefined && typeof train !== 'boolean') return fail(line, `${at}.train`, 'expected true or false');
      messages.push({ ...m, role: role as Role } as Message);
    }
    return { ok: true, line, conversation: tools ? { messages, tools: tools as unknown[] } : { messages } };
  }

  if ('conversations' in value) {
    const raw = value['conversations'];
    if (!Array.isArray(raw)) return fail(line, 'conversations', 'expected a list');
    if (raw.length === 0) return fail(line, 'conversations', 'empty conversation');
    const messages: Message[] = [];
    for (let i = 0; i < raw.length; i++) {
      const m: unknown = raw[i];
      const at = `conversations[${i}]`;
      if (!isObject(m)) return fail(line, at, 'expected an object');
      const from = m['from'];
      if (typeof from !== 'string') return fail(line, `${at}.from`, 'missing or not a string');
      const role = SHAREGPT_ROLES[from];
      if (!role) return fail(line, `${at}.from`, `unknown speaker '${from}' (expected system, human, gpt, …)`);
      const content = m['value'];
      if (typeof content !== 'string') return fail(line, `${at}.value`, 'missing or not a string');
      const train = m['train'];
      if (train !== undefined && typeof train !== 'boolean') return fail(line, `${at}.train`, 'expected true or false');
      messages.push(train === undefined ? { role, content } : { role, content, train });
    }
    return { ok: true, line, conversation: tools ? { messages, tools: tools as unknown[] } : { messages } };
  }

  return fail(line, '(line)', "expected a 'messages' or 'conversations' field");
}

/** Why a line was left out before encoding: `invalid` (JSON or schema), `invalid_utf8`, `line_too_large`. */
export type ReadLine = ParsedLine & { bytes: number; reason?: string };

/**
 * Stream the lines of a JSONL file, parsed. Line numbers are 1-based. The
 * bytes are read, split and decoded by `readLines` (BOM, invalid UTF-8,
 * oversized lines); failures carry their `reason`.
 */
export async function* readConversations(file: string, opts: ReadLinesOptions = {}): AsyncGenerator<ReadLine> {
  for await (const raw of readLines(file, opts)) {
    if ('problem' in raw) {
      yield {
        ok: false,
        line: raw.line,
        issue: { line: raw.line, field: '(line)', message: raw.message },
        reason: raw.problem,
        bytes: raw.bytes,
      };
      continue;
    }
    const parsed = parseLine(raw.text, raw.line);
    yield parsed.ok === false ? { ...parsed, reason: 'invalid_data', bytes: raw.bytes } : { ...parsed, bytes: raw.bytes };
  }
}

export function formatIssue(file: string, issue: DataIssue): string {
  return `${file}:${issue.line} ${issue.field}: ${issue.message}`;
}
