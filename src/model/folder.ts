/**
 * Loading a Hugging Face model folder (SPEC §2): tokenizer.json through the
 * official `tokenizers` binding, and the JSON configs around it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Tokenizer } from 'tokenizers';
import { ChatsftError } from '../errors.js';
import { addsBos } from '../hf/files.js';
import { eosIdField } from '../hf/stop_ids.js';

export type PaddingSide = 'left' | 'right';

/** A special-token field of tokenizer_config.json: a string or an AddedToken object. */
type TokenField = string | { content: string } | null | undefined;

export interface AddedTokenInfo {
  id: number;
  content: string;
  special: boolean;
}

export interface ModelFolder {
  dir: string;
  tokenizer: Tokenizer;
  /** sha256 of tokenizer.json as read. */
  tokenizerSha256: string;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | undefined;
  specialTokensMap: Record<string, unknown> | undefined;
  /** config.json of the model, when present. */
  modelConfig: Record<string, unknown> | undefined;
  bosToken: string | undefined;
  eosToken: string | undefined;
  unkToken: string | undefined;
  padToken: string | undefined;
  /** Whether the tokenizer adds BOS when asked to add special tokens. */
  addBosToken: boolean;
  paddingSide: PaddingSide;
  /** The default chat template, if any. */
  chatTemplate: string | undefined;
  /** Named templates when chat_template is a list (`default`, `tool_use`, …). */
  chatTemplates: Record<string, string>;
  /** Added tokens of tokenizer.json (and tokenizer_config's added_tokens_decoder). */
  addedTokens: AddedTokenInfo[];
}

function readJson(file: string, required: boolean): Record<string, unknown> | undefined {
  if (!existsSync(file)) {
    if (required) throw new ChatsftError('FILE_MISSING', 'file not found', file);
    return undefined;
  }
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `not valid JSON (${(e as Error).message})`, file);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ChatsftError('FILE_CORRUPT', 'expected a JSON object', file);
  }
  return value as Record<string, unknown>;
}

function tokenString(field: TokenField | unknown, file: string, key: string): string | undefined {
  if (field === null || field === undefined) return undefined;
  if (typeof field === 'string') return field;
  if (typeof field === 'object' && typeof (field as { content?: unknown }).content === 'string') {
    return (field as { content: string }).content;
  }
  throw new ChatsftError('FILE_CORRUPT', `${key}: expected a string or {content}`, file);
}

function parseTemplates(raw: unknown, file: string): { chatTemplate?: string; chatTemplates: Record<string, string> } {
  if (raw === undefined || raw === null) return { chatTemplates: {} };
  if (typeof raw === 'string') return { chatTemplate: raw, chatTemplates: { default: raw } };
  if (Array.isArray(raw)) {
    const named: Record<string, string> = {};
    raw.forEach((entry: unknown, i: number) => {
      const e = entry as { name?: unknown; template?: unknown };
      if (typeof e?.name !== 'string' || typeof e.template !== 'string') {
        throw new ChatsftError('FILE_CORRUPT', `chat_template[${i}]: expected {name, template}`, file);
      }
      named[e.name] = e.template;
    });
    return { chatTemplate: named['default'], chatTemplates: named };
  }
  throw new ChatsftError('FILE_CORRUPT', 'chat_template: expected a string or a list of {name, template}', file);
}

export function loadModelFolder(dir: string): ModelFolder {
  if (!existsSync(dir)) throw new ChatsftError('FILE_MISSING', 'model folder not found', dir);
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) {
    throw new ChatsftError('FILE_MISSING', 'tokenizer.json not found (chatsft needs a fast tokenizer file)', tokPath);
  }
  const tokText = readFileSync(tokPath, 'utf8');
  let tokJson: Record<string, unknown>;
  try {
    tokJson = JSON.parse(tokText) as Record<string, unknown>;
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `not valid JSON (${(e as Error).message})`, tokPath);
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = Tokenizer.fromString(tokText);
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `tokenizers could not load it: ${(e as Error).message}`, tokPath);
  }
  const cfgPath = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = readJson(cfgPath, false) ?? {};
  const specialTokensMap = readJson(join(dir, 'special_tokens_map.json'), false);
  const generationConfig = readJson(join(dir, 'generation_config.json'), false);
  const modelConfig = readJson(join(dir, 'config.json'), false);

  // tokenizer_config wins over special_tokens_map, as in transformers.
  const pick = (key: string): string | undefined =>
    tokenString(tokenizerConfig[key], cfgPath, key) ?? tokenString(specialTokensMap?.[key], join(dir, 'special_tokens_map.json'), key);
  const bosToken = pick('bos_token');
  const eosToken = pick('eos_token');
  const unkToken = pick('unk_token');
  const padToken = pick('pad_token');

  const side = tokenizerConfig['padding_side'];
  if (side !== undefined && side !== 'left' && side !== 'right') {
    throw new ChatsftError('FILE_CORRUPT', `padding_side: expected "left" or "right", got ${JSON.stringify(side)}`, cfgPath);
  }
  const addBosToken = addsBos(tokenizerConfig, tokJson, bosToken);
  const parsed = parseTemplates(tokenizerConfig['chat_template'], cfgPath);
  // chat_template.jinja (what transformers >= 4.43 saves, and chatsft's export writes) wins over
  // tokenizer_config.json's chat_template, as in transformers.
  const jinjaPath = join(dir, 'chat_template.jinja');
  const fromFile = existsSync(jinjaPath) ? readFileSync(jinjaPath, 'utf8') : undefined;
  const chatTemplate = fromFile ?? parsed.chatTemplate;
  const chatTemplates = fromFile !== undefined ? { ...parsed.chatTemplates, default: fromFile } : parsed.chatTemplates;

  const addedTokens = new Map<number, AddedTokenInfo>();
  for (const t of (tokJson['added_tokens'] as Array<{ id: number; content: string; special: boolean }> | undefined) ?? []) {
    addedTokens.set(t.id, { id: t.id, content: t.content, special: Boolean(t.special) });
  }
  const decoder = tokenizerConfig['added_tokens_decoder'] as Record<string, { content: string; special?: boolean }> | undefined;
  for (const [id, t] of Object.entries(decoder ?? {})) {
    const n = Number(id);
    if (!addedTokens.has(n) && typeof t?.content === 'string') {
      addedTokens.set(n, { id: n, content: t.content, special: Boolean(t.special) });
    }
  }

  return {
    dir,
    tokenizer,
    tokenizerSha256: createHash('sha256').update(tokText).digest('hex'),
    tokenizerConfig,
    generationConfig,
    specialTokensMap,
    modelConfig,
    bosToken,
    eosToken,
    unkToken,
    padToken,
    addBosToken,
    paddingSide: (side as PaddingSide | undefined) ?? 'right',
    chatTemplate,
    chatTemplates,
    addedTokens: [...addedTokens.values()].sort((a, b) => a.id - b.id),
  };
}

/** `eos_token_id` of generation_config.json (int or list), as a list. */
export function generationEosIds(folder: ModelFolder): number[] {
  return eosIdField(folder.generationConfig?.['eos_token_id'] ?? folder.modelConfig?.['eos_token_id']);
}

export function tokenId(folder: ModelFolder, token: string | undefined): number | undefined {
  if (token === undefined) return undefined;
  return folder.tokenizer.tokenToId(token) ?? undefined;
}
