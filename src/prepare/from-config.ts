/** The pipeline's part of the config (SPEC §6) turned into a tokenizer setup and encode options. */
import { ChatsftError } from '../errors.js';
import type { SftConfig } from '../config/schema.js';
import { loadModelFolder } from '../model/folder.js';
import { setupTokenizer, type TokenizerSetup } from '../tokenize/setup.js';
import type { EncodeOptions } from '../labels/encode.js';

export function setupFromConfig(cfg: SftConfig): TokenizerSetup {
  if (!cfg.model) throw new ChatsftError('USAGE', 'missing --model DIR (or model: in the config)');
  return setupTokenizer(loadModelFolder(cfg.model), {
    template: cfg.template,
    pad: cfg.pad,
    paddingSide: cfg.padding_side,
    templateVars: cfg.template_vars,
  });
}

export function encodeOptionsFrom(cfg: SftConfig): EncodeOptions {
  return {
    trainOn: cfg.train_on,
    ...(cfg.max_length !== undefined ? { maxLength: cfg.max_length } : {}),
    truncation: cfg.truncation,
    allowSpecialTokensInContent: cfg.allow_special_tokens_in_content,
  };
}
