/**
 * What a runtime needs besides weights to generate from a model folder: the
 * prompt ids (chat template + generation prompt), the stop ids and the ids
 * that open a new turn. Shared by `generate`, `chat`, `eval` and the demo.
 *
 *   const rt = await chatRuntime(setup);
 *   const ids = await promptIds(setup, [{ role: 'user', content: 'Hi' }]);
 *   // generate(model, [ids], { stopIds: rt.stopIds, ... })
 */
import { ChatsftError } from '../errors.js';
import type { Message } from '../data/conversations.js';
import { generationEosIds, type ModelFolder } from '../model/folder.js';
import { probeTemplate } from '../template/probe.js';
import { renderChat } from '../template/render.js';
import { setupTokenizer, type TokenizerSetup } from '../tokenize/setup.js';
import { stopIdsOf } from '../model/save.js';
import { templateEotIds } from '../model/eot.js';
import { turnHeaderIds, turnHeaderText } from '../template/turn_header.js';

export interface ChatRuntime {
  /** Union of the three sources below, sorted. */
  stopIds: number[];
  /** Where each stop id comes from (for reports and `doctor`-style messages). */
  stopSources: { templateEot: number[]; generationConfigEos: number[]; tokenizerEos: number | null };
  /**
   * Id sequences that open a turn (`[[<|im_start|>]]` for ChatML): a
   * generation that contains one has started writing the next turn.
   */
  turnHeaders: number[][];
}

/**
 * A tokenizer setup for inference. Generation never pads by id (the engine
 * masks its own padding) and loss labels come from spans, so the pad only
 * has to be a token the vocabulary already has: the folder's pad, else its
 * eos. This keeps `pad: auto` from adding a <|pad|> the weights do not have.
 */
export function setupForInference(folder: ModelFolder, template: string): TokenizerSetup {
  const has = (t: string | undefined): t is string => t !== undefined && folder.tokenizer.tokenToId(t) !== null;
  const pad = has(folder.padToken) ? folder.padToken : has(folder.eosToken) ? 'eos' : 'auto';
  return setupTokenizer(folder, { template, pad });
}

/** Token ids of `text` as a runtime sees it: no special tokens added, BOS prepended when the tokenizer adds one. */
export async function encodeText(setup: TokenizerSetup, text: string): Promise<number[]> {
  const enc = await setup.tokenizer.encode(text, null, { addSpecialTokens: false });
  const ids = enc.getIds();
  if (setup.addBos && setup.bosId !== undefined && !(setup.bosToken && text.startsWith(setup.bosToken))) return [setup.bosId, ...ids];
  return ids;
}

/** Prompt ids for `messages` rendered with the chat template and its generation prompt. */
export async function promptIds(setup: TokenizerSetup, messages: readonly Message[]): Promise<number[]> {
  const text = renderChat(setup.template, { messages: [...messages] }, { addGenerationPrompt: true, vars: setup.vars });
  return encodeText(setup, text);
}

/** The turn headers (template/turn_header.ts) of the setup's template, in its tokenizer's ids. */
export async function turnHeadersOf(setup: TokenizerSetup): Promise<number[][]> {
  const text = turnHeaderText(setup.template, setup.vars);
  return turnHeaderIds(text === null ? [] : (await setup.tokenizer.encode(text, null, { addSpecialTokens: false })).getIds());
}

export async function chatRuntime(setup: TokenizerSetup): Promise<ChatRuntime> {
  const probe = await probeTemplate(setup);
  const templateEot = await templateEotIds(setup, probe);
  const generationConfigEos = generationEosIds(setup.folder);
  const tokenizerEos = setup.eosId ?? null;
  const stopIds = stopIdsOf(setup, templateEot);
  if (stopIds.length === 0) {
    throw new ChatsftError(
      'MODEL_INVALID',
      'no stop ids: the template closes turns with no token, and neither generation_config.json nor the tokenizer names an eos',
      setup.folder.dir,
    );
  }
  // Turn headers come from the probe (template/turn_header.ts's definition); a stop id is never a header.
  const stops = new Set(stopIds);
  return {
    stopIds,
    stopSources: { templateEot, generationConfigEos, tokenizerEos },
    turnHeaders: probe.turnHeaders.filter((h) => !h.some((id) => stops.has(id))),
  };
}
