/**
 * The stop ids a runtime should use: the template's end-of-turn ids, the
 * `eos_token_id` of generation_config.json (an int or a list) and the
 * tokenizer's eos. Taking the union is what makes a model that learned to
 * close turns with `<|im_end|>` / `<|eot_id|>` / `<end_of_turn>` stop even
 * when one of the sources only names `</s>` / `<|end_of_text|>` / `<eos>`.
 */
import { ChatsftError } from '../errors.js';

export interface StopIdSources {
  /** Ids of the token(s) the template closes assistant turns with. */
  eotIds?: number | readonly number[] | null;
  /** generation_config.json `eos_token_id`, as found (int, list or absent). */
  generationConfigEos?: number | readonly number[] | null;
  /** The tokenizer's eos token id, if it has one. */
  tokenizerEos?: number | null;
}

function asList(value: number | readonly number[] | null | undefined, where: string): number[] {
  if (value === undefined || value === null) return [];
  const list = typeof value === 'number' ? [value] : [...value];
  list.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0) {
      throw new ChatsftError('MODEL_INVALID', `stop id must be a non-negative integer, got ${String(id)}`, typeof value === 'number' ? where : `${where}[${i}]`);
    }
  });
  return list;
}

/** Sorted, de-duplicated union of all sources. */
export function stopIdsFor(sources: StopIdSources): number[] {
  const all = new Set<number>([
    ...asList(sources.eotIds, 'eot_token_ids'),
    ...asList(sources.generationConfigEos, 'generation_config.json eos_token_id'),
    ...asList(sources.tokenizerEos, 'tokenizer eos_token'),
  ]);
  return [...all].sort((a, b) => a - b);
}
