/**
 * The one definition of "turn header" both eval engines use (the embedded
 * engine in eval/runtime.ts, llama.cpp in eval/gguf.ts), so
 * `runaway_new_turn` means the same thing whichever runtime generated.
 *
 * A turn header is the first token of the text the chat template appends
 * for `add_generation_prompt` (`<|im_start|>` of ChatML, `<|start_header_id|>`
 * of Llama 3, `<start_of_turn>` of Gemma): a generation that contains it has
 * started writing a new turn. Templates whose generation prompt is empty
 * (Mistral's `[INST] … [/INST]`) use the first token of a rendered user turn
 * instead (after BOS). Only the first token is taken, so a runaway into a
 * user turn and one into another assistant turn both count.
 */
import type { Conversation } from '../data/conversations.js';
import { renderChat, type ChatTemplate, type TemplateVars } from './render.js';

const ONE_USER_TURN: Conversation = { messages: [{ role: 'user', content: 'x' }] };

/** The text whose first token opens a turn, or null when the template renders none. */
export function turnHeaderText(template: ChatTemplate, vars: TemplateVars): string | null {
  let without: string;
  let withPrompt: string;
  try {
    without = renderChat(template, ONE_USER_TURN, { vars });
    withPrompt = renderChat(template, ONE_USER_TURN, { vars, addGenerationPrompt: true });
  } catch {
    return null;
  }
  if (withPrompt.startsWith(without) && withPrompt.length > without.length) return withPrompt.slice(without.length);
  const bos = vars.bos_token;
  const user = bos && without.startsWith(bos) ? without.slice(bos.length) : without;
  return user.trim() === '' ? null : user;
}

/**
 * Header id sequences from the header text's ids, as the runtime's own
 * tokenizer encodes it (special-token text parsed as the special token, no
 * BOS added). Empty when there is no header.
 */
export function turnHeaderIds(headerTextIds: readonly number[]): number[][] {
  const first = headerTextIds[0];
  return first === undefined ? [] : [[first]];
}
