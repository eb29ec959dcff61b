/**
 * A tokenizer set up for SFT: the chat template chosen, ChatML tokens added
 * when the vocabulary lacks them, and the pad token chosen by the pad policy
 * (SPEC §4). Everything downstream reads this plain record.
 */
import { ChatsftError } from '../errors.js';
import type { Tokenizer } from 'tokenizers';
import { type ModelFolder } from '../model/folder.js';
import { CHATML_TEMPLATE, compileTemplate, loadTemplateFile, type ChatTemplate, type TemplateVars } from '../template/render.js';

export type TemplateChoice = 'model' | 'chatml' | string;
export type PadChoice = 'auto' | 'eos' | 'unk' | string;
export type TrainOn = 'assistant' | 'last' | 'all';

export interface SetupOptions {
  template?: TemplateChoice;
  pad?: PadChoice;
  paddingSide?: 'left' | 'right';
  /** Extra variables for the template (e.g. enable_thinking). */
  templateVars?: Record<string, unknown>;
}

export interface TokenizerSetup {
  folder: ModelFolder;
  tokenizer: Tokenizer;
  template: ChatTemplate;
  vars: TemplateVars;
  /** Ids of special added tokens: the only ids that can close a turn. */
  specialIds: Set<number>;
  /** Special-token strings that must not appear in content. */
  specialStrings: string[];
  bosToken: string | undefined;
  bosId: number | undefined;
  /** Prepend BOS when the rendered text does not start with it. */
  addBos: boolean;
  eosToken: string | undefined;
  eosId: number | undefined;
  padToken: string;
  padId: number;
  /** How the pad was chosen, and a warning when it is an EOS/EOT-like token. */
  padReason: string;
  padWarning: string | undefined;
  paddingSide: 'left' | 'right';
  /** Tokens chatsft added to the vocabulary, in id order (the model's embeddings grow by these). */
  addedTokens: Array<{ content: string; id: number }>;
  vocabSize: number;
}

function addSpecial(tok: Tokenizer, content: string, added: Array<{ content: string; id: number }>): number {
  const existing = tok.tokenToId(content);
  if (existing !== null && existing !== undefined) return existing;
  tok.addSpecialTokens([content]);
  const id = tok.tokenToId(content);
  if (id === null || id === undefined) throw new ChatsftError('TOKENIZER_ERROR', `could not add special token ${content}`);
  added.push({ content, id });
  return id;
}

function chooseTemplate(folder: ModelFolder, choice: TemplateChoice): ChatTemplate {
  if (choice === 'chatml') return compileTemplate(CHATML_TEMPLATE, 'chatml');
  if (choice === 'model') {
    if (!folder.chatTemplate) {
      throw new ChatsftError(
        'TEMPLATE_MISSING',
        'the model has no chat_template; pass --template chatml or --template FILE.jinja',
        `${folder.dir}/tokenizer_config.json`,
      );
    }
    const main = compileTemplate(folder.chatTemplate, 'model');
    // A list of named templates: transformers renders conversations with tools with `tool_use`.
    const toolUse = folder.chatTemplates['tool_use'];
    if (toolUse !== undefined && toolUse !== folder.chatTemplate) main.toolUse = compileTemplate(toolUse, 'model');
    return main;
  }
  const named = folder.chatTemplates[choice];
  if (named !== undefined) return compileTemplate(named, 'model');
  return loadTemplateFile(choice);
}

export function setupTokenizer(folder: ModelFolder, opts: SetupOptions = {}): TokenizerSetup {
  const tokenizer = folder.tokenizer;
  const added: Array<{ content: string; id: number }> = [];
  const template = chooseTemplate(folder, opts.template ?? 'model');
  let eosToken = folder.eosToken;
  if (template.origin === 'chatml') {
    // OpenHermes order: <|im_end|> first (32000 on Mistral), then <|im_start|>.
    addSpecial(tokenizer, '<|im_end|>', added);
    addSpecial(tokenizer, '<|im_start|>', added);
    eosToken = '<|im_end|>';
  }

  const id = (t: string | undefined): number | undefined => (t === undefined ? undefined : (tokenizer.tokenToId(t) ?? undefined));
  const eosLike = new Set<string>([eosToken, folder.eosToken].filter((t): t is string => t !== undefined));
  if (template.origin === 'chatml') eosLike.add('<|im_end|>');

  const pad = choosePad(folder, opts.pad ?? 'auto', eosToken, eosLike, tokenizer, added);

  const specialIds = new Set<number>();
  const specialStrings: string[] = [];
  for (const t of folder.addedTokens) {
    if (t.special) {
      specialIds.add(t.id);
      specialStrings.push(t.content);
    }
  }
  for (const t of added) {
    specialIds.add(t.id);
    specialStrings.push(t.content);
  }

  const vars: TemplateVars = {
    ...(opts.templateVars ?? {}),
    bos_token: folder.bosToken ?? '',
    eos_token: eosToken ?? '',
    ...(folder.unkToken ? { unk_token: folder.unkToken } : {}),
    pad_token: pad.token,
  };

  return {
    folder,
    tokenizer,
    template,
    vars,
    specialIds,
    specialStrings,
    bosToken: folder.bosToken,
    bosId: id(folder.bosToken),
    addBos: folder.addBosToken && id(folder.bosToken) !== undefined,
    eosToken,
    eosId: id(eosToken),
    padToken: pad.token,
    padId: pad.id,
    padReason: pad.reason,
    padWarning: pad.warning,
    paddingSide: opts.paddingSide ?? 'right',
    addedTokens: added,
    vocabSize: tokenizer.getVocabSize(true),
  };
}

function choosePad(
  folder: ModelFolder,
  choice: PadChoice,
  eosToken: string | undefined,
  eosLike: Set<string>,
  tokenizer: Tokenizer,
  added: Array<{ content: string; id: number }>,
): { token: string; id: number; reason: string; warning?: string } {
  const idOf = (t: string): number | undefined => tokenizer.tokenToId(t) ?? undefined;
  const eosWarning = (t: string): string =>
    `pad token ${t} is an EOS/EOT token: chatsft's labels stay correct, but any collator that masks labels by pad id erases every EOT`;
  if (choice === 'auto') {
    const p = folder.padToken;
    if (p !== undefined && !eosLike.has(p) && idOf(p) !== undefined) {
      return { token: p, id: idOf(p) as number, reason: 'the tokenizer pad token' };
    }
    const u = folder.unkToken;
    if (u !== undefined && !eosLike.has(u) && idOf(u) !== undefined) {
      return {
        token: u,
        id: idOf(u) as number,
        reason: p ? `unk (the tokenizer pad ${p} is an EOS/EOT token)` : 'unk (the tokenizer has no pad token)',
      };
    }
    const id = addSpecial(tokenizer, '<|pad|>', added);
    return { token: '<|pad|>', id, reason: 'a new <|pad|> token (no usable pad or unk)' };
  }
  if (choice === 'eos') {
    if (eosToken === undefined || idOf(eosToken) === undefined) {
      throw new ChatsftError('CONFIG_INVALID', 'pad: eos, but the tokenizer has no eos token', 'pad');
    }
    return { token: eosToken, id: idOf(eosToken) as number, reason: 'eos (pad: eos)', warning: eosWarning(eosToken) };
  }
  if (choice === 'unk') {
    const u = folder.unkToken;
    if (u === undefined || idOf(u) === undefined)
      throw new ChatsftError('CONFIG_INVALID', 'pad: unk, but the tokenizer has no unk token', 'pad');
    return { token: u, id: idOf(u) as number, reason: 'unk (pad: unk)' };
  }
  const existing = idOf(choice);
  const id = existing ?? addSpecial(tokenizer, choice, added);
  return {
    token: choice,
    id,
    reason: existing === undefined ? `new token ${choice}` : `pad: ${choice}`,
    ...(eosLike.has(choice) ? { warning: eosWarning(choice) } : {}),
  };
}
