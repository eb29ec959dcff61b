/**
 * Issue 10, classes 1, 5 and 7 through the real CLI: an output is replaced
 * only when chatsft wrote it, never when it is (or holds) an input, and the
 * replacement never loses the old one (move aside → swap → restore on
 * failure, with faults injected through CHATSFT_FAULT); `--out` on procfs
 * fails at once; a file with no usable example is exit 2 and leaves the old
 * output byte-for-byte intact.
 */
import { test, before, after } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertUserError, cli, CLI, DEAD_PID, hashTree, leftovers, tinySetup } from './harness.js';

let root = '';
let model = '';
let data = '';
/** A folder chatsft prepared (and its hashes), replaced or refused by the tests. */
let prepared = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-output-'));
  ({ model, data } = await tinySetup(root));
  prepared = path.join(root, 'prepared');
  const r = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const prep = (out: string, ...extra: string[]) =>
  cli(['prepare', '--model', model, '--data', data, '--out', out, '--format', 'jsonl', '--quiet', ...extra]);

test('--overwrite replaces a prepared folder; without it the folder is refused and kept', () => {
  const before = hashTree(prepared);
  assertUserError(prep(prepared), 'USAGE', '--overwrite');
  assert.deepEqual(hashTree(prepared), before);
  const r = prep(prepared, '--overwrite');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(fs.readFileSync(path.join(prepared, 'manifest.json'), 'utf8')) as { generator: string; examples: number };
  assert.equal(m.generator, 'chatsft');
  assert.equal(m.examples, 24);
  assert.deepEqual(leftovers(root), []);
});

test('a manifest from before the generator field still counts as chatsft output', () => {
  const legacy = path.join(root, 'legacy-prepared');
  fs.cpSync(prepared, legacy, { recursive: true });
  const m = JSON.parse(fs.readFileSync(path.join(legacy, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  delete m['generator'];
  fs.writeFileSync(path.join(legacy, 'manifest.json'), JSON.stringify(m));
  assert.equal(prep(legacy, '--overwrite').code, 0);
});

test('--overwrite refuses folders chatsft did not write, and any output that is or holds an input', () => {
  // A user's folder with a look-alike manifest, one with a corrupt manifest, a model folder, the data's own folder.
  const mine = path.join(root, 'mine');
  fs.mkdirSync(mine);
  fs.writeFileSync(path.join(mine, 'manifest.json'), '{"name": "my project"}');
  fs.writeFileSync(path.join(mine, 'notes.txt'), 'precious');
  const corrupt = path.join(root, 'corrupt');
  fs.mkdirSync(corrupt);
  fs.writeFileSync(path.join(corrupt, 'manifest.json'), '{"generator": "chats');
  const dataDir = path.join(root, 'datadir');
  fs.mkdirSync(dataDir);
  fs.copyFileSync(data, path.join(dataDir, 'train.jsonl'));
  const cases: Array<[string[], string, RegExp]> = [
    [['--out', mine], 'OUTPUT_REFUSED', /mine: not a folder prepared by chatsft \(manifest.json has no "generator"/],
    [['--out', corrupt], 'OUTPUT_REFUSED', /corrupt: not a folder prepared by chatsft \(manifest.json is not valid JSON\)/],
    [['--out', model], 'OUTPUT_REFUSED', /--out is an input of this command/],
    [['--out', root], 'OUTPUT_REFUSED', /--out contains an input of this command/],
  ];
  const hashes = [mine, corrupt, model, dataDir].map(hashTree);
  for (const [args, code, msg] of cases) {
    const r = cli(['prepare', '--model', model, '--data', data, '--quiet', '--overwrite', ...args]);
    assertUserError(r, code, msg);
  }
  // `--out .` inside the data folder (the case): relative paths are resolved before comparing.
  const r = spawnIn(dataDir, ['prepare', '--model', model, '--data', 'train.jsonl', '--out', '.', '--overwrite', '--quiet']);
  assertUserError(r, 'OUTPUT_REFUSED', /contains an input of this command \(train.jsonl\)/);
  assert.deepEqual([mine, corrupt, model, dataDir].map(hashTree), hashes);
  // A link to a prepared folder: replacing would swap the link, not the folder.
  const link = path.join(root, 'prepared-link');
  fs.symlinkSync(prepared, link);
  assertUserError(
    prep(link, '--overwrite'),
    'OUTPUT_REFUSED',
    /prepared-link: --out is a symbolic link \(to .*prepared\); pass the path it points to/,
  );
  fs.unlinkSync(link);
  // A training run is chatsft's, but not a prepared folder: prepare does not replace it either.
  const run = path.join(root, 'run-lookalike');
  fs.mkdirSync(run);
  fs.writeFileSync(path.join(run, 'chatsft-run.json'), '{"generator":"chatsft"}');
  assertUserError(prep(run, '--overwrite'), 'OUTPUT_REFUSED', 'run-lookalike');
});

function spawnIn(cwd: string, args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('a failed swap puts the old folder back byte-for-byte; a failed swap and restore says where it is, and the next run restores it', () => {
  // The rename of the new folder into place fails (as on a read-only parent or across devices).
  const r = prep(prepared, '--overwrite');
  assert.equal(r.code, 0);
  const kept = hashTree(prepared);
  const swap = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--quiet', '--overwrite'], {
    CHATSFT_FAULT: 'swap:EXDEV',
  });
  assertUserError(swap, 'IO_ERROR', /prepared: cannot rename.*\(EXDEV\)/);
  assert.deepEqual(hashTree(prepared), kept, 'old folder restored');
  assert.deepEqual(leftovers(root), []);
  // Moving the old folder aside fails: nothing moved, nothing lost.
  const aside = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--quiet', '--overwrite'], {
    CHATSFT_FAULT: 'aside:EBUSY',
  });
  assertUserError(aside, 'IO_ERROR', /\(EBUSY\)/);
  assert.deepEqual(hashTree(prepared), kept);
  // Both the swap and the restore fail: the old folder waits at .prepared.old-PID, and the error says so.
  const both = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--quiet', '--overwrite'], {
    CHATSFT_FAULT: 'swap:EIO,restore:EIO',
  });
  assertUserError(both, 'IO_ERROR', /your previous output is intact at .*\.prepared\.old-\d+/);
  assert.ok(!fs.existsSync(prepared));
  const oldPath = /intact at (\S+\.prepared\.old-\d+)/.exec(both.stderr)?.[1] as string;
  assert.deepEqual(hashTree(oldPath), kept);
  // The next run (that pid is dead now) puts it back before doing anything else.
  const next = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl']);
  assertUserError(next, 'USAGE', '--overwrite');
  assert.match(next.stderr, /note: restored .*prepared from \.prepared\.old-\d+/);
  assert.deepEqual(hashTree(prepared), kept);
  assert.deepEqual(leftovers(root), []);
});

test("stale temps of dead processes beside the output are reclaimed and reported; a live process's are left alone", () => {
  const stale = path.join(root, `.prepared.partial-${DEAD_PID}`);
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'train-00000.jsonl'), 'half');
  const liveOne = path.join(root, `.prepared.partial-${process.pid}`);
  fs.mkdirSync(liveOne);
  const other = path.join(root, `.unrelated.partial-${DEAD_PID}`);
  fs.mkdirSync(other);
  const r = cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--overwrite']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`note: removed .*\\.prepared\\.partial-${DEAD_PID} \\(left by interrupted process ${DEAD_PID}\\)`));
  assert.ok(!fs.existsSync(stale));
  assert.ok(fs.existsSync(liveOne), 'a live process is still writing it');
  assert.ok(fs.existsSync(other), 'only temps of this output are touched');
  fs.rmSync(liveOne, { recursive: true });
  fs.rmSync(other, { recursive: true });
});

test('zero examples (empty, blank lines only, all invalid) is exit 2 with counts by reason, and never replaces the output', () => {
  const kept = hashTree(prepared);
  const files: Array<[string, string, RegExp]> = [
    ['empty.jsonl', '', /no usable example in 0 line\(s\): no lines with a conversation/],
    ['blank.jsonl', '\n  \n\n', /no usable example in 3 line\(s\): no lines with a conversation/],
    [
      'invalid.jsonl',
      '{"a": 1}\nnot json\n{"messages": [{"role": "bot", "content": "x"}]}\n',
      /no usable example in 3 line\(s\): invalid_data 3; first: .*invalid.jsonl:1/,
    ],
  ];
  for (const [name, text, msg] of files) {
    const f = path.join(root, name);
    fs.writeFileSync(f, text);
    const r = cli(['prepare', '--model', model, '--data', f, '--out', prepared, '--overwrite', '--quiet']);
    assertUserError(r, 'DATA_INVALID', msg);
    assert.ok(r.stderr.includes(name));
    assert.deepEqual(hashTree(prepared), kept, `${name}: the prepared folder is intact`);
    const fresh = cli(['prepare', '--model', model, '--data', f, '--out', path.join(root, 'never'), '--quiet']);
    assertUserError(fresh, 'DATA_INVALID', name);
    assert.ok(!fs.existsSync(path.join(root, 'never')), 'no empty output folder');
  }
  // The same rule for train on a JSONL file.
  const t = cli([
    'train',
    '--model',
    model,
    '--data',
    path.join(root, 'invalid.jsonl'),
    '--output-dir',
    path.join(root, 'never-run'),
    '--max-steps',
    '1',
    '--quiet',
  ]);
  assertUserError(t, 'DATA_INVALID', /invalid.jsonl: no usable example in 3 line\(s\): invalid_data 3/);
  assert.ok(!fs.existsSync(path.join(root, 'never-run')));
  assert.deepEqual(leftovers(root), []);
});

test('--out on procfs fails at once (Node 20 recursive mkdir would spin forever) for prepare, train and export', () => {
  const t0 = Date.now();
  for (const out of ['/proc/chatsft-x', '/proc/self/chatsft/y']) {
    assertUserError(
      cli(['prepare', '--model', model, '--data', data, '--out', out, '--quiet'], {}, 20_000),
      'IO_ERROR',
      /proc.*pseudo file system/,
    );
  }
  assertUserError(
    cli(['train', '--model', model, '--data', data, '--output-dir', '/proc/chatsft-run', '--max-steps', '1', '--quiet'], {}, 20_000),
    'IO_ERROR',
    /\/proc\/chatsft-run: cannot write output here: \/proc is on procfs/,
  );
  assert.ok(Date.now() - t0 < 20_000);
});
