/**
 * manifest.json of a prepared folder (SPEC §5), parsed with a schema rather
 * than trusted, and checked against the config a run trains with: data
 * prepared under one template, pad, label policy, length or packing must not
 * silently train a run configured for another.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ChatsftError } from '../errors.js';
import type { TokenizerSetup } from '../tokenize/setup.js';

export const MANIFEST = 'manifest.json';

const count = z.number().int().min(0);

const SplitSchema = z.looseObject({
  examples: count,
  rows: count,
  tokens: count,
  supervised_tokens: count,
  assistant_turns: count,
  trained_turns: count,
  supervised_eot: count,
  truncated: count.default(0),
  dropped: z.record(z.string(), count),
  eot_token_ids: z.array(count),
  issues: z.array(z.string()).default([]),
});

/** What chatsft reads back from a manifest; unknown keys are kept (later versions may add some). */
export const ManifestSchema = SplitSchema.extend({
  chatsft_version: z.string(),
  created: z.string(),
  model: z.string(),
  data: z.string(),
  pad_token: z.string(),
  pad_token_id: count,
  padding_side: z.enum(['left', 'right']),
  added_tokens: z.array(z.object({ content: z.string(), id: count })),
  vocab_size: count,
  train_on: z.enum(['assistant', 'last', 'all']),
  template: z.object({ origin: z.string(), source: z.string(), sha256: z.string() }),
  tokenizer_sha256: z.string(),
  max_length: count.nullable(),
  truncation: z.enum(['drop', 'truncate_turns']),
  packing: z.boolean(),
  format: z.enum(['parquet', 'jsonl']),
  shards: z.array(z.string()),
  eval: SplitSchema.extend({ shards: z.array(z.string()), data: z.string() }).optional(),
});

export type ParsedManifest = z.infer<typeof ManifestSchema>;

/** Read and validate `dir/manifest.json`; every problem is reported with its field path. */
export function readManifest(dir: string): ParsedManifest {
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) throw new ChatsftError('FILE_MISSING', 'not a prepared folder (no manifest.json)', dir);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `not valid JSON (${(e as Error).message})`, file);
  }
  const r = ManifestSchema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ChatsftError('FILE_CORRUPT', `not a chatsft manifest: ${problems.join('; ')}`, file);
  }
  return r.data;
}

/** The config fields a prepared folder fixes. */
export interface PreparedExpectation {
  train_on: string;
  max_length: number | null;
  packing: boolean;
}

/**
 * Refuse a prepared folder whose preparation differs from this run's config,
 * naming the first differing field: tokenizer, template, pad, train_on,
 * max_length, packing.
 */
export function checkManifest(m: ParsedManifest, setup: TokenizerSetup, want: PreparedExpectation, file: string): void {
  const refuse = (field: string, message: string): never => {
    throw new ChatsftError(
      'CONFIG_INVALID',
      `${field}: ${message}; prepare the data again with this config, or change the config to match`,
      file,
    );
  };
  if (m.tokenizer_sha256 !== setup.folder.tokenizerSha256 || m.vocab_size !== setup.vocabSize) {
    refuse('tokenizer', 'prepared with another tokenizer or other added tokens than this model and config');
  }
  if (m.template.sha256 !== setup.template.sha256) {
    refuse(
      'template',
      `prepared with template ${m.template.origin} (sha256 ${m.template.sha256.slice(0, 12)}…), the config gives ${setup.template.origin} (sha256 ${setup.template.sha256.slice(0, 12)}…)`,
    );
  }
  if (m.pad_token !== setup.padToken || m.pad_token_id !== setup.padId) {
    refuse(
      'pad',
      `prepared with pad ${JSON.stringify(m.pad_token)} (id ${m.pad_token_id}), the config gives ${JSON.stringify(setup.padToken)} (id ${setup.padId})`,
    );
  }
  if (m.train_on !== want.train_on) refuse('train_on', `prepared with train_on: ${m.train_on}, the config says ${want.train_on}`);
  if (m.max_length !== want.max_length)
    refuse('max_length', `prepared with max_length ${m.max_length ?? 'unset'}, the config says ${want.max_length ?? 'unset'}`);
  if (m.packing !== want.packing) refuse('packing', `prepared with packing: ${m.packing}, the config says ${want.packing}`);
}
