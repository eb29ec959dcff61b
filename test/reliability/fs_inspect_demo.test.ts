/**
 * Issue 10 class 1 for the two remaining outputs: `inspect --html FILE`
 * and `demo --out DIR` replace only what chatsft itself wrote (a page with
 * the inspect marker, a folder with chatsft-demo.json), only with
 * --overwrite, atomically; anything else is refused byte-for-byte intact.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertUserError, cli, DEAD_PID, hashTree, leftovers, tinySetup } from './harness.js';

let root = '';
let model = '';
let data = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-inspect-demo-'));
  ({ model, data } = await tinySetup(root, 6));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const inspect = (html: string, ...extra: string[]) => cli(['inspect', '--model', model, '--data', data, '--html', html, ...extra]);

test('inspect --html: a file chatsft did not write is refused even with --overwrite; its own page needs --overwrite and is replaced atomically', () => {
  const page = path.join(root, 'page.html');
  const r = inspect(page);
  assert.equal(r.code, 0, r.stderr);
  const first = fs.readFileSync(page, 'utf8');
  assert.match(first, /^<!doctype html>\n<!-- generator: chatsft inspect -->\n/);

  // Its own page: refused without --overwrite, replaced with it (a different conversation: new content).
  assertUserError(inspect(page), 'USAGE', /page\.html: output file exists and is not empty \(pass --overwrite to replace it\)/);
  assert.equal(fs.readFileSync(page, 'utf8'), first);
  const again = inspect(page, '--overwrite', '--index', '1');
  assert.equal(again.code, 0, again.stderr);
  const second = fs.readFileSync(page, 'utf8');
  assert.notEqual(second, first);
  assert.ok(second.includes('<!-- generator: chatsft inspect -->'));
  assert.deepEqual(leftovers(root), []);

  // A user's file, an HTML page someone else wrote, and the data file itself: never replaced.
  const notes = path.join(root, 'notes.html');
  fs.writeFileSync(notes, '<!doctype html><p>my notes</p>');
  for (const target of [notes, data]) {
    const kept = hashTree(target);
    for (const extra of [[], ['--overwrite']]) {
      const res = inspect(target, ...extra);
      if (target === data) assertUserError(res, 'OUTPUT_REFUSED', /--html is an input of this command/);
      else assertUserError(res, 'OUTPUT_REFUSED', /notes\.html: not a page written by chatsft inspect.*even with --overwrite/);
    }
    assert.deepEqual(hashTree(target), kept);
  }
});

test('inspect --html: a failed rename keeps the old page whole, no temp left', () => {
  const page = path.join(root, 'page2.html');
  assert.equal(inspect(page).code, 0);
  const kept = hashTree(page);
  const r = cli(['inspect', '--model', model, '--data', data, '--html', page, '--overwrite', '--index', '1'], {
    CHATSFT_FAULT: 'swap:EIO:page2.html',
  });
  assertUserError(r, 'IO_ERROR', /page2\.html/);
  assert.deepEqual(hashTree(page), kept);
  assert.deepEqual(leftovers(root), []);
});

const demo = (out: string, ...extra: string[]) =>
  cli(
    [
      'demo',
      '--quick',
      '--steps',
      '1',
      '--train-size',
      '12',
      '--heldout',
      '1',
      '--max-new-tokens',
      '2',
      '--quiet',
      '--json',
      '--out',
      out,
      ...extra,
    ],
    {},
    120_000,
  );

test('demo --out: refuses a non-empty folder it did not write; --overwrite replaces only an earlier demo output', () => {
  const user = path.join(root, 'user-folder');
  fs.mkdirSync(user);
  fs.writeFileSync(path.join(user, 'thesis.tex'), 'do not lose me');
  const kept = hashTree(user);
  assertUserError(
    demo(user),
    'OUTPUT_REFUSED',
    /user-folder: not a folder written by chatsft demo \(no chatsft-demo\.json\).*even with --overwrite/,
  );
  assertUserError(demo(user, '--overwrite'), 'OUTPUT_REFUSED', /user-folder: not a folder written by chatsft demo/);
  assert.deepEqual(hashTree(user), kept);

  const out = path.join(root, 'demo');
  const r = demo(out);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(fs.readFileSync(path.join(out, 'chatsft-demo.json'), 'utf8')) as { generator: string }).generator, 'chatsft');
  const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as { out: string; runs: { model_dir: string }[] };
  assert.equal(report.out, out);
  for (const run of report.runs)
    assert.ok(fs.existsSync(path.join(run.model_dir, 'config.json')), `report names the final folder: ${run.model_dir}`);

  const before = hashTree(out);
  assertUserError(demo(out), 'USAGE', /demo: output folder exists and is not empty \(pass --overwrite to replace it\)/);
  assert.deepEqual(hashTree(out), before);

  // A stale temp of a killed demo is reclaimed; the earlier output is replaced whole.
  fs.mkdirSync(path.join(root, `.demo.partial-${DEAD_PID}`));
  fs.writeFileSync(path.join(out, 'mine.txt'), 'part of the old demo output');
  const again = demo(out, '--overwrite', '--seed', '5');
  assert.equal(again.code, 0, again.stderr);
  assert.ok(!fs.existsSync(path.join(out, 'mine.txt')), 'the old output was replaced, not merged');
  assert.ok(fs.existsSync(path.join(out, 'report.json')));
  assert.deepEqual(leftovers(root), []);
});
