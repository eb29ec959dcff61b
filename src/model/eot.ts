/**
 * Which token closes assistant turns, found the way training finds it: the
 * template probe (template/probe.ts) renders probe conversations with the
 * folder's own chat template and the label builder reads back the EOT of a
 * final turn, i.e. what a runtime must stop on. Nothing is hard-coded, so
 * a ChatML, Llama 3 (`<|eot_id|>`) or Gemma (`<end_of_turn>`) folder each
 * gives its own EOT, and a harmony (gpt-oss) folder gives `<|return|>`, never `<|end|>`.
 *
 *   const eot = await discoverEot('runs/chatsft');   // { token: '<|im_end|>', id: 151645, ... }
 *
 * This module is the one entry point to EOT discovery for export, eval and
 * the trainer's stop ids; both functions read template/'s single probe.
 */
import { ChatsftError, isChatsftError } from '../errors.js';
import { probeTemplate, type TemplateProbe } from '../template/probe.js';
import { loadModelFolder, type ModelFolder } from '../model/folder.js';
import { setupTokenizer, type TokenizerSetup } from '../tokenize/setup.js';

export interface DiscoveredEot {
  token: string;
  id: number;
  /** Where the template came from (`model` for the folder's chat_template). */
  template: string;
}

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
  const probe = await probeTemplate(setup);
  const final = probe.closings.find((c) => c.kind === 'final');
  const id = final?.ids[final.ids.length - 1];
  if (id === undefined) {
    throw new ChatsftError(
      'TEMPLATE_ERROR',
      `could not find the end-of-turn token with the chat template (${probe.problem?.message ?? 'no final turn'}); pass --eot TOKEN`,
      folder.dir,
    );
  }
  const token = setup.tokenizer.idToToken(id);
  if (token === null || token === undefined) throw new ChatsftError('TOKENIZER_ERROR', `EOT id ${id} has no token string`, folder.dir);
  return { token, id, template: setup.template.origin };
}

/**
 * Ids the template closes generations with (the probe's stop ids: EOT of
 * final and tool-call turns; empty when turns close with no token). Pass
 * the probe when the caller already has it.
 */
export async function templateEotIds(setup: TokenizerSetup, probe?: TemplateProbe): Promise<number[]> {
  return (probe ?? (await probeTemplate(setup))).stopIds;
}
