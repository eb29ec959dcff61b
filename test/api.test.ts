/** The public API resolves from the package entry and the CLI answers --help for every command. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from './helpers/fixtures.js';

test('the package entry exports the pipeline by name', async () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { main: string; bin: { chatsft: string } };
  const api = (await import(join(REPO_ROOT, pkg.main))) as Record<string, unknown>;
  for (const name of [
    'loadModelFolder',
    'setupTokenizer',
    'createEncoder',
    'collate',
    'packExamples',
    'prepareToDir',
    'runDoctor',
    'generate',
    'summarizeGenerations',
    'readManifest',
  ]) {
    assert.equal(typeof api[name], 'function', name);
  }
  assert.equal(api['IGNORE_INDEX'], -100);
  // The subpaths, resolved by package name as a user's import would be.
  const engine = (await import('chatsft/engine')) as Record<string, unknown>;
  for (const name of ['initEngine', 'loadModel', 'runTraining', 'trainFromConfig', 'engineStepModel', 'evaluateModel'])
    assert.equal(typeof engine[name], 'function', name);
  const exp = (await import('chatsft/export')) as Record<string, unknown>;
  for (const name of ['exportHf', 'exportGguf', 'discoverEot', 'stopIdsFor']) assert.equal(typeof exp[name], 'function', name);
});

/**
 * Import `specifier` in a fresh process whose resolve hook throws on any
 * @tensorflow/* module: the exit status says whether it loads TF.js.
 */
function loadsTensorflow(specifier: string): { loads: boolean; detail: string } {
  const dir = mkdtempSync(join(tmpdir(), 'chatsft-notf-'));
  try {
    writeFileSync(
      join(dir, 'hooks.mjs'),
      "export async function resolve(s, c, next) { if (s.startsWith('@tensorflow/')) throw new Error('TFJS_LOADED ' + s + ' from ' + c.parentURL); return next(s, c); }\n",
    );
    writeFileSync(join(dir, 'register.mjs'), "import { register } from 'node:module'; register('./hooks.mjs', import.meta.url);\n");
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        pathToFileURL(join(dir, 'register.mjs')).href,
        '--input-type=module',
        '-e',
        `await import(${JSON.stringify(specifier)});`,
      ],
      { cwd: REPO_ROOT, encoding: 'utf8' },
    );
    if (r.status !== 0 && !/TFJS_LOADED/.test(r.stderr)) throw new Error(`import ${specifier} failed: ${r.stderr}`);
    return { loads: r.status !== 0, detail: r.stderr.split('\n').find((l) => l.includes('TFJS_LOADED')) ?? '' };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('importing chatsft and chatsft/export does not load TensorFlow.js; chatsft/engine does', () => {
  const root = loadsTensorflow('chatsft');
  assert.equal(root.loads, false, root.detail);
  const exp = loadsTensorflow('chatsft/export');
  assert.equal(exp.loads, false, exp.detail);
  assert.equal(loadsTensorflow('chatsft/engine').loads, true, 'the hook detects TF.js (the check can fail)');
});

test('every command has --help', () => {
  const cli = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
  const top = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
  assert.equal(top.status, 0);
  const commands = ['prepare', 'inspect', 'doctor', 'train', 'generate', 'chat', 'eval', 'demo'];
  for (const c of commands) {
    assert.match(top.stdout, new RegExp(`\\b${c}\\b`), `${c} listed`);
    const r = spawnSync(process.execPath, [cli, c, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${c} --help`);
    assert.match(r.stdout, /Usage: chatsft/);
  }
  const bad = spawnSync(process.execPath, [cli, 'nonsense'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
});
