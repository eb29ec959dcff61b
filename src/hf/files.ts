/**
 * The Hugging Face folder format (SPEC §2), as every reader shares it: JSON
 * files, `tokenizer.json` (vocab, added tokens, post-processor) and
 * `tokenizer_config.json` (special tokens, chat template).
 */
import fs from 'node:fs';
import { ChatsftError } from '../errors.js';

export type Json = Record<string, unknown>;

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

export function readJson(file: string): Json {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ChatsftError('FILE_MISSING', 'cannot read file', file);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Json;
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `invalid JSON (${(e as Error).message})`, file);
  }
}

/** `"<s>"` or `{"content": "<s>", ...}` (AddedToken serialisation) → string. */
export function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json)['content'] === 'string') return (v as Json)['content'] as string;
  return null;
}

/** Chat template as tokenizer_config stores it: a string, or a list of named templates. */
export function configChatTemplate(cfg: Json): string | null {
  const t = cfg['chat_template'];
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t as { name?: unknown; template?: unknown }[];
    const d = named.find((x) => x.name === 'default') ?? named[0];
    return typeof d?.template === 'string' ? d.template : null;
  }
  return null;
}

/** Every token string of a parsed tokenizer.json → id (added tokens included). */
export function tokenIds(tokenizerJson: Json): Map<string, number> {
  const model = tokenizerJson['model'] as Json | undefined;
  const vocab = (model?.['vocab'] ?? {}) as Record<string, number>;
  const ids = new Map<string, number>(Array.isArray(vocab) ? [] : Object.entries(vocab));
  for (const a of (tokenizerJson['added_tokens'] as AddedToken[] | undefined) ?? []) ids.set(a.content, a.id);
  return ids;
}

/**
 * Whether tokenizer.json's post-processor adds `token` first (`first`, a BOS)
 * or last (`last`, an EOS) to a single sequence: its TemplateProcessing
 * `single` list, parsed (a Sequence of processors is searched too).
 */
export function postProcessorAdds(tokenizerJson: Json, token: string | null | undefined, where: 'first' | 'last'): boolean {
  if (!token) return false;
  const pp = tokenizerJson['post_processor'] as Json | null | undefined;
  const procs = pp?.['type'] === 'Sequence' ? ((pp['processors'] as Json[]) ?? []) : pp ? [pp] : [];
  for (const p of procs) {
    if (p['type'] !== 'TemplateProcessing' || !Array.isArray(p['single'])) continue;
    const single = p['single'] as Json[];
    const item = where === 'first' ? single[0] : single[single.length - 1];
    const sp = item?.['SpecialToken'] as Json | undefined;
    if (sp && sp['id'] === token) return true;
  }
  return false;
}

/** Whether the tokenizer adds BOS: tokenizer_config's `add_bos_token` when set, else the post-processor. */
export function addsBos(tokenizerConfig: Json, tokenizerJson: Json, bosToken: string | null | undefined): boolean {
  const v = tokenizerConfig['add_bos_token'];
  return typeof v === 'boolean' ? v : postProcessorAdds(tokenizerJson, bosToken, 'first');
}
