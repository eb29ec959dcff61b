/**
 * Chat templates rendered with `@huggingface/jinja`, with the variables
 * transformers' `apply_chat_template` provides (messages, tools,
 * add_generation_prompt, the special-token strings, raise_exception).
 *
 * `{% generation %}` blocks: the library deletes them while parsing, so the
 * source is rewritten first to print a private-use sentinel where each block
 * opens and closes; the sentinels are stripped after rendering and give the
 * spans HF's `return_assistant_tokens_mask` would give.
 */
import { readFileSync, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { ChatsftError } from '../errors.js';
import type { Conversation } from '../data/conversations.js';
import { PyTemplate } from './jinja-compat.js';

/** Sentinels from the Unicode private-use area; content holding them is rejected. */
export const GEN_OPEN = '\uE000';
export const GEN_CLOSE = '\uE001';
export const CONTENT_OPEN = '\uE002';
export const CONTENT_CLOSE = '\uE003';
export const SENTINEL_RE = /[\uE000-\uE003]/;

/** The ChatML template OpenHermes-2.5 ships, used for models without one. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export type TemplateOrigin = 'model' | 'chatml' | 'file';

/** Anything that renders the template's variables to text: a compiled Jinja template, or the native ChatML renderer. */
export interface Renderer {
  render(items: Record<string, unknown>): string;
}

/**
 * OpenHermes' ChatML template, rendered natively when a template's source is
 * exactly CHATML_TEMPLATE (byte for byte; test/template.test.ts checks it
 * equals the Jinja render). Rendering is most of prepare's JavaScript time,
 * and this is the commonest template.
 */
const NATIVE_CHATML: Renderer = {
  render(items) {
    let out = '';
    for (const m of items['messages'] as Array<{ role: string; content?: string | null }>) {
      // Python raises on str + None; so does the Jinja render (jinja-compat.ts).
      if (typeof m.content !== 'string') throw new Error('TypeError: can only concatenate str (not "NoneType") to str');
      out += '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>' + '\n';
    }
    if (items['add_generation_prompt']) out += '<|im_start|>assistant\n';
    return out;
  },
};

export interface ChatTemplate {
  source: string;
  sha256: string;
  origin: TemplateOrigin;
  /** Path of a `.jinja` file when origin is 'file'. */
  path?: string;
  hasGenerationTags: boolean;
  /**
   * The template is byte for byte OpenHermes' ChatML, rendered natively; its
   * spans are computed while rendering (the only fast path: a static proof
   * over arbitrary templates was unsound, see spans.ts).
   */
  nativeChatml: boolean;
  /** The `tool_use` template of a named-template list: transformers uses it when the conversation has tools. */
  toolUse?: ChatTemplate;
  /** Plain HF render (generation tags removed). */
  plain: Renderer;
  /** Render with generation sentinels; same as `plain` without tags. */
  marked: Renderer;
}

/** The special-token strings and extra variables a template sees. */
export interface TemplateVars {
  bos_token?: string;
  eos_token?: string;
  unk_token?: string;
  pad_token?: string;
  [name: string]: unknown;
}

const GENERATION_TAG = /(^[ \t]*)?\{%(-?)\s*(end)?generation\s*(-?)%\}(\n)?/gm;

/**
 * Rewrite generation tags into sentinel prints with the same whitespace
 * handling: `-` strips as before; `lstrip_blocks` removes the indentation of
 * a tag that starts its line and `trim_blocks` the newline after it, which a
 * `{{ }}` print would not do by itself.
 */
function markGenerationTags(source: string): string {
  return source.replace(GENERATION_TAG, (_m, _indent, lstrip: string, end: string | undefined, rstrip: string) => {
    const sentinel = end ? GEN_CLOSE : GEN_OPEN;
    return `{{${lstrip} '${sentinel}' ${rstrip}}}`;
  });
}

export function compileTemplate(source: string, origin: TemplateOrigin, path?: string): ChatTemplate {
  const hasGenerationTags = /\{%-?\s*generation\s*-?%\}/.test(source);
  let plain: PyTemplate;
  let marked: PyTemplate;
  try {
    plain = new PyTemplate(source);
    marked = hasGenerationTags ? new PyTemplate(markGenerationTags(source)) : plain;
  } catch (e) {
    throw new ChatsftError('TEMPLATE_ERROR', `chat template does not parse: ${(e as Error).message}`, path ?? `${origin} template`);
  }
  return {
    source,
    sha256: createHash('sha256').update(source).digest('hex'),
    origin,
    ...(path ? { path } : {}),
    hasGenerationTags,
    nativeChatml: source === CHATML_TEMPLATE,
    plain: source === CHATML_TEMPLATE ? NATIVE_CHATML : plain,
    marked: source === CHATML_TEMPLATE ? NATIVE_CHATML : marked,
  };
}

export function loadTemplateFile(path: string): ChatTemplate {
  if (!existsSync(path)) throw new ChatsftError('FILE_MISSING', 'template file not found', path);
  return compileTemplate(readFileSync(path, 'utf8'), 'file', path);
}

export interface RenderOptions {
  addGenerationPrompt?: boolean;
  vars?: TemplateVars;
}

/** Render with the given compiled template; template exceptions become TEMPLATE_ERROR. */
export function renderWith(tpl: Renderer, conv: Conversation, opts: RenderOptions = {}): string {
  try {
    return tpl.render({
      ...(opts.vars ?? {}),
      messages: conv.messages,
      // transformers passes tools=None when there are none; templates test `tools is not none`.
      tools: conv.tools ?? null,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  } catch (e) {
    throw new ChatsftError('TEMPLATE_ERROR', `chat template raised: ${(e as Error).message}`);
  }
}

/** The render transformers' apply_chat_template(tokenize=False) would give. */
export function renderChat(template: ChatTemplate, conv: Conversation, opts: RenderOptions = {}): string {
  return renderWith(templateFor(template, conv).plain, conv, opts);
}

/** The template transformers would use for this conversation: `tool_use` when it has tools and the list names one. */
export function templateFor(template: ChatTemplate, conv: Conversation): ChatTemplate {
  return conv.tools && conv.tools.length > 0 && template.toolUse ? template.toolUse : template;
}
