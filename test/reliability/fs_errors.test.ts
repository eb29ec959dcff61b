/**
 * Issue 10, class 8: operating-system errors are user errors (IO_ERROR)
 * that name the path and the cause, never `error[INTERNAL]`. Real faults
 * where the machine allows them (a tiny tmpfs for ENOSPC, a read-only one
 * for EROFS, `chattr +i` for a rename that fails even for root), and the
 * CHATSFT_FAULT seam otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isChatsftError } from '../../src/errors.js';
import { userErrorFromOs } from '../../src/util/fs-errors.js';
import { assertUserError, canMountTmpfs, cli, hashTree, leftovers, mountTmpfs, tinySetup, umount } from './harness.js';

let root = '';
let model = '';
let data = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-errors-'));
  ({ model, data } = await tinySetup(root));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const prep = (out: string, extra: string[] = [], env: Record<string, string> = {}) =>
  cli(['prepare', '--model', model, '--data', data, '--out', out, '--format', 'jsonl', '--quiet', ...extra], env);

test('every errno the issue lists maps to IO_ERROR with the path, the operation and a plain cause', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['ENOENT', 'open', /cannot open: no such file or folder \(ENOENT\)/],
    ['EACCES', 'open', /cannot open: permission denied \(EACCES\)/],
    ['EPERM', 'rename', /cannot rename: operation not permitted \(EPERM\)/],
    ['EISDIR', 'read', /cannot read: is a folder, not a file \(EISDIR\)/],
    ['ENOTDIR', 'scandir', /cannot list: a part of the path is a file, not a folder \(ENOTDIR\)/],
    ['EROFS', 'mkdir', /cannot create folder: read-only file system \(EROFS\)/],
    ['ENOSPC', 'write', /cannot write: no space left on the device \(ENOSPC\)/],
    ['EEXIST', 'mkdir', /cannot create folder: already exists \(EEXIST\)/],
    ['EMFILE', 'open', /cannot open: too many open files \(raise `ulimit -n`\) \(EMFILE\)/],
    ['EXDEV', 'rename', /cannot rename: cannot move across file systems \(EXDEV\)/],
    ['EWHATEVER', 'futimes', /futimes failed: .*\(EWHATEVER\)/],
  ];
  for (const [code, syscall, msg] of cases) {
    const e = Object.assign(new Error(`${code}: something, ${syscall} '/x/y'`), { code, syscall, path: '/x/y' });
    const u = userErrorFromOs(e);
    assert.ok(isChatsftError(u), code);
    assert.equal(u.code, 'IO_ERROR');
    assert.equal(u.where, '/x/y');
    assert.match(u.message, msg);
  }
  // The caller's path when the error has none; a non-OS error (a bug) passes through unchanged.
  const noPath = userErrorFromOs(Object.assign(new Error('EACCES'), { code: 'EACCES', syscall: 'read' }), 'data.jsonl');
  assert.ok(isChatsftError(noPath) && noPath.where === 'data.jsonl');
  const bug = new TypeError('x is undefined');
  assert.equal(userErrorFromOs(bug), bug);
  // Node's own argument errors (ERR_*) are bugs, not OS errors.
  assert.ok(!isChatsftError(userErrorFromOs(Object.assign(new Error('x'), { code: 'ERR_INVALID_ARG_TYPE' }))));
});

test('a folder where a file is expected, a file where a folder is expected, a missing file: named, no INTERNAL', () => {
  const asData = cli(['prepare', '--model', model, '--data', model, '--out', path.join(root, 'o1'), '--quiet']);
  assertUserError(asData, 'IO_ERROR', /model: is a folder, not a JSONL file \(EISDIR\)/);
  const asConfig = cli(['prepare', '--config', model, '--out', path.join(root, 'o1')]);
  assertUserError(asConfig, 'IO_ERROR', /model: cannot read: is a folder, not a file \(EISDIR\)/);
  assertUserError(prep(path.join(data, 'sub')), 'IO_ERROR', /train\.jsonl\/sub: .*a part of the path is a file, not a folder \(ENOTDIR\)/);
  assertUserError(prep(path.join(data, 'a', 'b')), 'IO_ERROR', /ENOTDIR/);
  assertUserError(prep(data), 'OUTPUT_REFUSED', /train\.jsonl: --out (must be a folder|is an input)/);
  assertUserError(
    cli(['prepare', '--model', model, '--data', path.join(root, 'nope.jsonl'), '--out', path.join(root, 'o1')]),
    'FILE_MISSING',
    'nope.jsonl',
  );
  // The model folder as --html is an input: refused before any work.
  assertUserError(cli(['inspect', '--model', model, '--data', data, '--html', model]), 'OUTPUT_REFUSED', /model: .*is an input/);
  assert.deepEqual(leftovers(root), []);
});

test('a corrupt manifest.json is a user error for train, and --overwrite will not replace that folder', () => {
  const p = path.join(root, 'corrupt-prepared');
  assert.equal(prep(p).code, 0);
  fs.writeFileSync(path.join(p, 'manifest.json'), '{"generator": "chatsft", "shards": [');
  const t = cli(['train', '--model', model, '--data', p, '--output-dir', path.join(root, 'run-x'), '--max-steps', '1', '--quiet']);
  assertUserError(t, 'FILE_CORRUPT', /corrupt-prepared\/manifest\.json: not valid JSON/);
  assertUserError(prep(p, ['--overwrite']), 'OUTPUT_REFUSED', /not valid JSON/);
});

test('injected faults: EACCES and ENOSPC while writing, EXDEV on the swap; the earlier output stays intact and no temp is left', () => {
  const out = path.join(root, 'faulty');
  assert.equal(prep(out).code, 0);
  const kept = hashTree(out);
  for (const [fault, msg] of [
    ['write:EACCES', /faulty\/train-00000\.jsonl: cannot write: permission denied \(EACCES\)/],
    ['write:ENOSPC:manifest', /faulty\/manifest\.json: cannot write: no space left on the device \(ENOSPC\)/],
    ['swap:EXDEV', /faulty: cannot rename.*\(EXDEV\)/],
  ] as const) {
    assertUserError(prep(out, ['--overwrite'], { CHATSFT_FAULT: fault }), 'IO_ERROR', msg);
    assert.deepEqual(hashTree(out), kept, fault);
    assert.deepEqual(leftovers(root), [], fault);
  }
});

const tmpfsOk = canMountTmpfs(path.join(os.tmpdir(), `chatsft-mount-probe-${process.pid}`));
fs.rmSync(path.join(os.tmpdir(), `chatsft-mount-probe-${process.pid}`), { recursive: true, force: true });

test(
  'disk full on a real tmpfs (ENOSPC) for prepare and for a training checkpoint, and a read-only one (EROFS)',
  { skip: tmpfsOk ? false : 'mount -t tmpfs is not permitted here (needs root in a privileged container)' },
  () => {
    const full = path.join(root, 'full');
    mountTmpfs(full, 'size=8k');
    try {
      fs.writeFileSync(path.join(full, 'notes.txt'), 'user data');
      const kept = hashTree(full);
      const r = prep(path.join(full, 'out'));
      assertUserError(r, 'IO_ERROR', /full\/out\/\S+: cannot write: no space left on the device \(ENOSPC\)/);
      assert.deepEqual(hashTree(full), kept, 'only the user file is there: no partial output, no temp');
    } finally {
      umount(full);
    }
    // Disk full while training writes a checkpoint: the error names the checkpoint, and no temp checkpoint is left.
    const full2 = path.join(root, 'full2');
    mountTmpfs(full2, 'size=40k');
    try {
      const t = cli([
        'train',
        '--model',
        model,
        '--data',
        data,
        '--output-dir',
        path.join(full2, 'run'),
        '--max-steps',
        '3',
        '--checkpoint-every',
        '1',
        '--quiet',
      ]);
      assertUserError(t, 'IO_ERROR', /full2\/run\/checkpoint\/\S+: cannot write: no space left on the device \(ENOSPC\)/);
      assert.deepEqual(leftovers(full2), []);
    } finally {
      umount(full2);
    }
    const ro = path.join(root, 'ro');
    mountTmpfs(ro, 'ro,size=64k');
    try {
      assertUserError(prep(path.join(ro, 'out')), 'IO_ERROR', /ro\/out: cannot create folder: read-only file system \(EROFS\)/);
      assertUserError(
        cli(['train', '--model', model, '--data', data, '--output-dir', path.join(ro, 'run', 'x'), '--max-steps', '1', '--quiet']),
        'IO_ERROR',
        /ro\/run: cannot create folder: read-only file system \(EROFS\)/,
      );
    } finally {
      umount(ro);
    }
  },
);

const chattrOk = (() => {
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-chattr-'));
  const ok = spawnSync('chattr', ['+i', probe]).status === 0;
  spawnSync('chattr', ['-i', probe]);
  fs.rmSync(probe, { recursive: true, force: true });
  return ok;
})();

test(
  'a rename that really fails (chattr +i, which stops root too): the old folder is kept byte-for-byte',
  { skip: chattrOk ? false : 'chattr +i is not available or not permitted here' },
  () => {
    const parent = path.join(root, 'immutable-parent');
    const out = path.join(parent, 'prepared');
    assert.equal(prep(out).code, 0);
    const kept = hashTree(parent);
    // The old folder cannot be moved aside.
    spawnSync('chattr', ['+i', out]);
    try {
      assertUserError(
        prep(out, ['--overwrite']),
        'IO_ERROR',
        /prepared: cannot rename( → \S+\.prepared\.old-\d+)?: operation not permitted \(EPERM\)/,
      );
    } finally {
      spawnSync('chattr', ['-i', out]);
    }
    assert.deepEqual(hashTree(parent), kept);
    // Nothing can be created beside it.
    spawnSync('chattr', ['+i', parent]);
    try {
      assertUserError(prep(out, ['--overwrite']), 'IO_ERROR', /prepared: cannot create folder: operation not permitted \(EPERM\)/);
    } finally {
      spawnSync('chattr', ['-i', parent]);
    }
    assert.deepEqual(hashTree(parent), kept);
    assert.deepEqual(leftovers(root), []);
  },
);
