/**
 * The layering the code states, checked on every `npm test` (STYLE.md, SPEC §9):
 * - engine/ imports only batch/, errors, util/ and hf/ (the HF format module);
 *   it is TensorFlow.js plus Hugging Face file formats, nothing of the pipeline;
 * - hf/ (file formats and the stop-id policy) imports only errors and util/;
 * - generate/ never imports tokenize/ or template/: the generator works on ids;
 * - the TF-free stages never import the engine (engine/safetensors.ts, plain
 *   file IO, is the one exception until it moves into hf/);
 * - nothing outside cli/ imports cli/.
 * Relative imports of src/**.ts are read with a regex: enough for this code
 * base, which has no re-export tricks across folders.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { REPO_ROOT } from './helpers/fixtures.js';

const SRC = join(REPO_ROOT, 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** `engine`, `hf`, … for files in a folder; the file's base name (`errors`, `index`) for files at src/. */
function layerOf(file: string): string {
  const parts = relative(SRC, file).split(sep);
  return parts.length > 1 ? (parts[0] as string) : (parts[0] as string).replace(/\.ts$/, '');
}

/** `static`: loaded with the importing module; `type`: erased at build time; `dynamic`: loaded on demand by import(). */
interface Edge {
  from: string;
  to: string;
  fromLayer: string;
  toLayer: string;
  kind: 'static' | 'type' | 'dynamic';
}

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const f of files(SRC)) {
    const text = readFileSync(f, 'utf8');
    // An import/export statement up to its specifier, or a dynamic import().
    for (const m of text.matchAll(/^(import|export)(\s+type)?\b[^;]*?from\s*'(\.{1,2}\/[^']+)'|import\(\s*'(\.{1,2}\/[^']+)'\s*\)/gms)) {
      const spec = (m[3] ?? m[4]) as string;
      const kind = m[4] !== undefined ? 'dynamic' : m[2] !== undefined ? 'type' : 'static';
      const target = resolve(dirname(f), spec.replace(/\.js$/, '.ts'));
      out.push({ from: relative(SRC, f), to: relative(SRC, target), fromLayer: layerOf(f), toLayer: layerOf(target), kind });
    }
  }
  return out;
}

const TF_FREE = new Set([
  'data',
  'template',
  'tokenize',
  'labels',
  'batch',
  'prepare',
  'doctor',
  'inspect',
  'hf',
  'export',
  'eval',
  'model',
  'config',
  'errors',
  'util',
]);

function violations(rule: (e: Edge) => boolean): string[] {
  return edges()
    .filter(rule)
    .map((e) => `${e.from} → ${e.to}`);
}

test('the import graph is read (the rules below see real edges)', () => {
  const all = edges();
  assert.ok(all.length > 200, `${all.length} edges`);
  assert.ok(all.some((e) => e.fromLayer === 'engine' && e.toLayer === 'hf'));
  assert.ok(all.some((e) => e.kind === 'type') && all.some((e) => e.kind === 'dynamic'));
});

test('engine/ imports only batch/, errors, util/ and hf/', () => {
  assert.deepEqual(
    violations((e) => e.fromLayer === 'engine' && !['engine', 'batch', 'errors', 'util', 'hf'].includes(e.toLayer)),
    [],
  );
});

test('hf/ imports only errors and util/', () => {
  assert.deepEqual(
    violations((e) => e.fromLayer === 'hf' && !['hf', 'errors', 'util'].includes(e.toLayer)),
    [],
  );
});

test('generate/ never imports the tokenizer or the template', () => {
  assert.deepEqual(
    violations((e) => e.fromLayer === 'generate' && ['tokenize', 'template'].includes(e.toLayer)),
    [],
  );
});

test('TF-free stages (eval/ and export/ included) never load the engine, train/ or the engine generator with themselves', () => {
  // Type imports are erased; eval/ loads the engine by import() only when given an engine model.
  assert.deepEqual(
    violations(
      (e) =>
        TF_FREE.has(e.fromLayer) &&
        e.kind === 'static' &&
        ((e.toLayer === 'engine' && e.to !== join('engine', 'safetensors.ts')) ||
          e.toLayer === 'train' ||
          e.to === join('generate', 'engine.ts') ||
          e.to === join('generate', 'index.ts')),
    ),
    [],
  );
});

test('nothing outside cli/ imports cli/', () => {
  assert.deepEqual(
    violations((e) => e.fromLayer !== 'cli' && e.toLayer === 'cli'),
    [],
  );
});
