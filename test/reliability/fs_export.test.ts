/**
 * Issue 10 for `export --format hf|gguf`: the same replacement helper as
 * prepare (only chatsft's own exports are replaced, never the model or a
 * user's file; a failed swap keeps the old output), procfs refused at
 * once, and SIGTERM at several moments leaves either the old or the
 * complete new output at the final name and no temp.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertUserError, cli, cliWithSignal, DEAD_PID, hashTree, leftovers, tinySetup } from './harness.js';

let root = '';
let trained = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-export-'));
  const { model, data } = await tinySetup(root);
  trained = path.join(root, 'trained');
  const r = cli(['train', '--model', model, '--data', data, '--output-dir', trained, '--max-steps', '1', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const exp = (format: string, out: string, ...extra: string[]) =>
  cli(['export', '--model', trained, '--format', format, '--out', out, '--json', ...extra]);

test('gguf: replaces only a GGUF chatsft wrote; a user file, a foreign GGUF and the model folder are refused and intact', () => {
  const file = path.join(root, 'model.gguf');
  assert.equal(exp('gguf', file).code, 0);
  assert.ok(fs.readFileSync(file).includes('chatsft.generator'), "the GGUF carries chatsft's marker key");
  assertUserError(exp('gguf', file), 'USAGE', '--overwrite');
  // What killed exports leave: the old writer's `model.gguf.tmp-PID-TIME`, and a staged file's own temp.
  const stale = [
    `model.gguf.tmp-${DEAD_PID}-1700000000000`,
    `.model.gguf.partial-${DEAD_PID}`,
    `.model.gguf.partial-${DEAD_PID}.tmp-${DEAD_PID}-1700000000000`,
  ];
  for (const n of stale) fs.writeFileSync(path.join(root, n), 'half a GGUF');
  const again = exp('gguf', file, '--overwrite', '--dtype', 'f32');
  assert.equal(again.code, 0, again.stderr);
  for (const n of stale)
    assert.ok(
      again.stderr.includes(`note: removed ${path.join(root, n)} (left by interrupted process ${DEAD_PID})`),
      `${n}\n${again.stderr}`,
    );
  assert.deepEqual(leftovers(root), []);

  const notes = path.join(root, 'notes.gguf');
  fs.writeFileSync(notes, 'my notes, not a model');
  const foreign = path.join(root, 'downloaded.gguf');
  const bytes = fs.readFileSync(file);
  bytes.set(Buffer.from('xxxxxxx'), bytes.indexOf('chatsft.generator'));
  fs.writeFileSync(foreign, bytes);
  const hashes = [notes, foreign, trained].map(hashTree);
  assertUserError(
    exp('gguf', notes, '--overwrite'),
    'OUTPUT_REFUSED',
    /notes\.gguf: not a GGUF file; chatsft replaces only output it wrote itself/,
  );
  assertUserError(
    exp('gguf', foreign, '--overwrite'),
    'OUTPUT_REFUSED',
    /downloaded\.gguf: a GGUF file not written by chatsft \(no chatsft\.generator in its metadata\)/,
  );
  assertUserError(exp('gguf', path.join(trained, 'model.safetensors'), '--overwrite'), 'OUTPUT_REFUSED', 'model.safetensors');
  assertUserError(exp('gguf', trained, '--overwrite'), 'OUTPUT_REFUSED', /--out (must be a file path|is an input)/);
  assert.deepEqual([notes, foreign, trained].map(hashTree), hashes);
  assert.deepEqual(leftovers(root), []);
});

test('hf: replaces only a folder chatsft exported; a failed swap keeps the old one; procfs and the source folder are refused', () => {
  const out = path.join(root, 'hf');
  assert.equal(exp('hf', out).code, 0);
  assert.ok(fs.existsSync(path.join(out, 'chatsft-export.json')));
  const kept = hashTree(out);
  assertUserError(
    cli(['export', '--model', trained, '--format', 'hf', '--out', out, '--overwrite'], { CHATSFT_FAULT: 'swap:EXDEV' }),
    'IO_ERROR',
    /hf: cannot rename.*\(EXDEV\)/,
  );
  assert.deepEqual(hashTree(out), kept);
  assert.equal(exp('hf', out, '--overwrite', '--dtype', 'f16').code, 0);
  assert.notDeepEqual(hashTree(out), kept, 'replaced');

  const user = path.join(root, 'user-hf');
  fs.mkdirSync(user);
  fs.writeFileSync(path.join(user, 'config.json'), '{"mine": true}');
  const userHash = hashTree(user);
  assertUserError(exp('hf', user, '--overwrite'), 'OUTPUT_REFUSED', /user-hf: not a folder exported by chatsft \(no chatsft-export.json\)/);
  assert.deepEqual(hashTree(user), userHash);
  const modelHash = hashTree(trained);
  assertUserError(exp('hf', trained, '--overwrite'), 'OUTPUT_REFUSED', /--out is an input of this command/);
  assertUserError(exp('hf', root, '--overwrite'), 'OUTPUT_REFUSED', /--out contains an input of this command/);
  assert.deepEqual(hashTree(trained), modelHash);
  assertUserError(
    cli(['export', '--model', trained, '--format', 'hf', '--out', '/proc/chatsft-hf'], {}, 20_000),
    'IO_ERROR',
    /\/proc\/chatsft-hf: cannot write output here: \/proc is on procfs/,
  );
  assert.deepEqual(leftovers(root), []);
});

test('gguf --overwrite, SIGTERM at several moments: the final name holds the old or the complete new file, never a part, and no temp is left', async () => {
  const file = path.join(root, 'sig.gguf');
  const ref = path.join(root, 'ref.gguf');
  assert.equal(exp('gguf', file, '--dtype', 'f32').code, 0);
  assert.equal(exp('gguf', ref, '--dtype', 'f16').code, 0);
  const oldHash = hashTree(file)['.'];
  const newHash = hashTree(ref)['.'];
  assert.notEqual(oldHash, newHash);
  for (const delayMs of [0, 250, 500, 900]) {
    const t0 = Date.now();
    const r = await cliWithSignal(
      ['export', '--model', trained, '--format', 'gguf', '--out', file, '--dtype', 'f16', '--overwrite', '--json'],
      'SIGTERM',
      () => Date.now() - t0 >= delayMs,
    );
    const h = hashTree(file)['.'];
    assert.ok(h === oldHash || h === newHash, `after SIGTERM at ${delayMs} ms the file is the old or the new one\n${r.stderr}`);
    assert.ok(r.signal === 'SIGTERM' || r.code === 143 || r.code === 0, `${delayMs} ms: code ${r.code} signal ${r.signal}\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /INTERNAL|\n\s+at /);
    assert.deepEqual(leftovers(root), [], `${delayMs} ms`);
    // Start over from the old file for the next moment.
    if (h === newHash) assert.equal(exp('gguf', file, '--dtype', 'f32', '--overwrite').code, 0);
  }
});
