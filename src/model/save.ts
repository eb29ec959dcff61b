/**
 * Writing the tokenizer side of a model folder after training or export:
 * the tokenizer with any tokens chatsft added, the pad token actually used,
 * the chat template the model was trained with, and a generation_config
 * whose `eos_token_id` includes the EOT the model learned — so runtimes
 * that read it stop where the model stops.
 */
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { tempName, writeJsonAtomic as writeJson } from '../util/atomic.js';
import { ensureDir } from '../util/fs-errors.js';
import { registerTemp, unregisterTemp } from '../util/temps.js';
import { join } from 'node:path';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { eosIdField, stopIdsFor } from '../hf/stop_ids.js';

/**
 * Stop ids of a tokenizer setup under the one policy (hf/stop_ids.ts): the
 * EOTs, generation_config's and config.json's eos ids, the setup's eos and
 * the base tokenizer's own eos (</s> of a Mistral turned ChatML).
 */
export function stopIdsOf(setup: TokenizerSetup, eotIds: readonly number[]): number[] {
  const baseEos = setup.folder.eosToken === undefined ? null : setup.tokenizer.tokenToId(setup.folder.eosToken);
  return stopIdsFor({
    eotIds,
    generationConfigEos: eosIdField(setup.folder.generationConfig?.['eos_token_id']),
    configEos: eosIdField(setup.folder.modelConfig?.['eos_token_id']),
    tokenizerEos: [...(setup.eosId !== undefined ? [setup.eosId] : []), ...(baseEos !== null && baseEos !== undefined ? [baseEos] : [])],
  });
}

export interface SaveTokenizerOptions {
  /** Ids that close assistant turns in the training data. */
  eotIds: number[];
}

export function saveTokenizerFiles(setup: TokenizerSetup, dir: string, opts: SaveTokenizerOptions): void {
  ensureDir(dir);
  const tmpTok = tempName(join(dir, 'tokenizer.json'));
  registerTemp(tmpTok);
  try {
    setup.tokenizer.save(tmpTok);
    renameSync(tmpTok, join(dir, 'tokenizer.json'));
  } finally {
    unregisterTemp(tmpTok);
  }

  const src = setup.folder;
  const config: Record<string, unknown> = { ...src.tokenizerConfig };
  const decoder = { ...((config['added_tokens_decoder'] as Record<string, unknown> | undefined) ?? {}) };
  for (const t of setup.addedTokens) {
    decoder[String(t.id)] = { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  }
  Object.assign(config, {
    added_tokens_decoder: decoder,
    pad_token: setup.padToken,
    padding_side: setup.paddingSide,
    chat_template: setup.template.source,
    ...(setup.eosToken ? { eos_token: setup.eosToken } : {}),
  });
  writeJson(join(dir, 'tokenizer_config.json'), config);

  const map: Record<string, unknown> = { ...(src.specialTokensMap ?? {}) };
  if (src.bosToken) map['bos_token'] = src.bosToken;
  if (setup.eosToken) map['eos_token'] = setup.eosToken;
  if (src.unkToken) map['unk_token'] = src.unkToken;
  map['pad_token'] = setup.padToken;
  writeJson(join(dir, 'special_tokens_map.json'), map);

  const genPath = join(dir, 'generation_config.json');
  const existing = existsSync(genPath) ? (JSON.parse(readFileSync(genPath, 'utf8')) as Record<string, unknown>) : {};
  writeJson(genPath, {
    ...(src.generationConfig ?? {}),
    ...existing,
    ...(setup.bosId !== undefined ? { bos_token_id: setup.bosId } : {}),
    eos_token_id: stopIdsOf(setup, opts.eotIds),
    pad_token_id: setup.padId,
  });
}
