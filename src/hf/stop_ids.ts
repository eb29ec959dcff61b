/**
 * The one stop-id policy (SPEC §9): a runtime should stop on the union of
 * the template's end-of-turn ids, generation_config.json's `eos_token_id`
 * (an int or a list), config.json's `eos_token_id`, and the tokenizer's eos
 * (the setup's, and the base folder's when a template changed it). Taking
 * the union is what makes a model that learned to close turns with
 * `<|im_end|>` / `<|eot_id|>` / `<end_of_turn>` stop even when one source
 * only names `</s>` / `<|end_of_text|>` / `<eos>`; stopping on any of them is
 * never wrong.
 *
 * Every writer and reader of stop ids goes through `stopIdsFor`: the model
 * folder training writes (model/save.ts), the runtime of generate/chat/eval
 * (eval/runtime.ts), the HF export (generation_config and config.json) and
 * the GGUF export (its eos + eot slots, the rest reported as dropped). A
 * test checks that the three written sets agree.
 */
import { ChatsftError } from '../errors.js';

type Ids = number | readonly number[] | null | undefined;

export interface StopIdSources {
  /** Ids of the token(s) the template closes assistant turns with. */
  eotIds?: Ids;
  /** generation_config.json `eos_token_id`, as found (int, list or absent). */
  generationConfigEos?: Ids;
  /** config.json `eos_token_id`, as found. */
  configEos?: Ids;
  /** The tokenizer's eos token id(s). */
  tokenizerEos?: Ids;
}

function asList(value: Ids, where: string): number[] {
  if (value === undefined || value === null) return [];
  const list = typeof value === 'number' ? [value] : [...value];
  list.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0) {
      throw new ChatsftError(
        'MODEL_INVALID',
        `stop id must be a non-negative integer, got ${String(id)}`,
        typeof value === 'number' ? where : `${where}[${i}]`,
      );
    }
  });
  return list;
}

/** Sorted, de-duplicated union of all sources. */
export function stopIdsFor(sources: StopIdSources): number[] {
  const all = new Set<number>([
    ...asList(sources.eotIds, 'eot_token_ids'),
    ...asList(sources.generationConfigEos, 'generation_config.json eos_token_id'),
    ...asList(sources.configEos, 'config.json eos_token_id'),
    ...asList(sources.tokenizerEos, 'tokenizer eos_token'),
  ]);
  return [...all].sort((a, b) => a - b);
}

/** An `eos_token_id` field as JSON has it (int, list, null, absent) → the ints in it. */
export function eosIdField(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}
