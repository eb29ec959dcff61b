/** The public API resolves from the package entry and the CLI answers --help for every command. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { REPO_ROOT } from './helpers/fixtures.js';

test('the package entry exports the pipeline by name', async () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { main: string; bin: { chatsft: string } };
  const api = (await import(join(REPO_ROOT, pkg.main))) as Record<string, unknown>;
  for (const name of ['loadModelFolder', 'setupTokenizer', 'createEncoder', 'collate', 'packExamples', 'prepareToDir', 'runDoctor', 'runTraining', 'generate', 'exportGguf']) {
    assert.equal(typeof api[name], 'function', name);
  }
  assert.equal(api['IGNORE_INDEX'], -100);
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
