/**
 * Which token closes assistant turns, found the way training finds it: the
 * folder's own chat template renders a probe conversation, the label builder
 * locates the turn's EOT, and its id is read back. Nothing is hard-coded, so
 * a ChatML, Llama 3 (`<|eot_id|>`) or Gemma (`<end_of_turn>`) folder each
 * gives its own EOT.
 *
 *   const eot = await discoverEot('runs/chatsft');   // { token: '<|im_end|>', id: 151645, ... }
 *
 * This module is the one entry point to EOT discovery for export, eval and
 * the trainer's stop ids; when template/'s single probe lands, these two
 * functions call it and nothing else changes.
 */
import { ChatsftError, isChatsftError } from '../errors.js';
import type { Conversation } from '../data/conversations.js';
import { createEncoder } from '../labels/encode.js';
import { loadModelFolder, type ModelFolder } from '../model/folder.js';
import { setupTokenizer, type TokenizerSetup } from '../tokenize/setup.js';

export interface DiscoveredEot {
  token: string;
  id: number;
  /** Where the template came from (`model` for the folder's chat_template). */
  template: string;
}

/** Plain words, no special-token text: every template renders them, and the content tokens cannot be mistaken for the EOT. */
const PROBE: Conversation = {
  messages: [
    { role: 'user', content: 'Hello there.' },
    { role: 'assistant', content: 'Hi! How can I help?' },
  ],
};

export async function discoverEot(folderOrDir: ModelFolder | string): Promise<DiscoveredEot> {
  const folder = typeof folderOrDir === 'string' ? loadModelFolder(folderOrDir) : folderOrDir;
  // setupTokenizer adds a `<|pad|>` to the (shared) tokenizer when it finds no
  // usable pad; naming an existing token as pad keeps the caller's folder unchanged.
  const existingPad = [folder.padToken, folder.unkToken, folder.eosToken, folder.bosToken].find(
    (t): t is string => t !== undefined && folder.tokenizer.tokenToId(t) !== null && folder.tokenizer.tokenToId(t) !== undefined,
  );
  let setup;
  try {
    setup = setupTokenizer(folder, { template: 'model', ...(existingPad !== undefined ? { pad: existingPad } : {}) });
  } catch (e) {
    if (isChatsftError(e) && e.code === 'TEMPLATE_MISSING') {
      throw new ChatsftError('TEMPLATE_MISSING', 'no chat_template to find the end-of-turn token from; pass --eot TOKEN', e.where);
    }
    throw e;
  }
  const [r] = await createEncoder(setup, { trainOn: 'assistant' }).encode([{ conversation: PROBE, line: 1 }]);
  if (!r || !r.ok) {
    const why = r && !r.ok ? `${r.reason}: ${r.detail}` : 'no result';
    throw new ChatsftError('TEMPLATE_ERROR', `could not find the end-of-turn token with the chat template (${why}); pass --eot TOKEN`, folder.dir);
  }
  const turn = r.turns.find((t) => t.trained);
  if (!turn) throw new ChatsftError('TEMPLATE_ERROR', 'the probe conversation has no trained assistant turn; pass --eot TOKEN', folder.dir);
  const token = setup.tokenizer.idToToken(turn.eotId);
  if (token === null || token === undefined) throw new ChatsftError('TOKENIZER_ERROR', `EOT id ${turn.eotId} has no token string`, folder.dir);
  return { token, id: turn.eotId, template: setup.template.origin };
}

/** A short conversation used to find the template's EOT and turn header. */
const TURN_PROBE: Conversation = {
  messages: [
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello' },
  ],
};

/** Ids the template closes assistant turns with (empty when the template closes them with no token). */
export async function templateEotIds(setup: TokenizerSetup): Promise<number[]> {
  const [r] = await createEncoder(setup, { trainOn: 'assistant' }).encode([{ conversation: TURN_PROBE, line: 0 }]);
  if (!r || !r.ok) return [];
  return [...new Set(r.turns.map((t) => t.eotId))];
}

