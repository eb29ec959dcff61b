/**
 * Issue 10, class 9 (and the kill -9 side of class 3): SIGINT / SIGTERM
 * remove in-progress temp output and exit 130 / 143, put a moved-aside
 * earlier output back, and leave the final name either untouched or
 * complete; temps a SIGKILL left are reclaimed by the next run.
 *
 * prepare reads its data from a FIFO so the signal lands at a known point
 * (staging folder created, or a shard already written into it) instead of
 * racing a sub-second run.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, cliWithSignal, hashTree, leftovers, tinySetup } from './harness.js';

let root = '';
let model = '';
let data = '';
let lines: string[] = [];
let prepared = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-signals-'));
  ({ model, data, lines } = await tinySetup(root));
  prepared = path.join(root, 'prepared');
  assert.equal(cli(['prepare', '--model', model, '--data', data, '--out', prepared, '--format', 'jsonl', '--quiet']).code, 0);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/**
 * A FIFO fed with `first` lines once the reader opens it; the rest never
 * comes, so the reader waits there. `close` ends it (unblocking our pending
 * open if the reader never came).
 */
function fifoWith(name: string, first: string[]): { file: string; opened: () => boolean; close: () => void } {
  const file = path.join(root, name);
  assert.equal(spawnSync('mkfifo', [file]).status, 0, 'mkfifo');
  let fd: number | undefined;
  let closed = false;
  // Opening the write end blocks until a reader opens it: asynchronously.
  fs.open(file, 'w', (err, f) => {
    if (err) return;
    if (closed) return fs.closeSync(f);
    fd = f;
    fs.writeSync(f, first.join('\n') + '\n');
  });
  return {
    file,
    opened: () => fd !== undefined,
    close: () => {
      closed = true;
      if (fd !== undefined) return fs.closeSync(fd);
      // Nobody opened the read end: open it ourselves so the pending open returns.
      fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
    },
  };
}

/** Enough lines for two tokenizer chunks (256 conversations each), so rows reach the shard writer. */
const many = (): string[] => Array.from({ length: 600 }, (_, i) => lines[i % lines.length] as string);

/**
 * The process ends by the signal it got (re-raised after cleanup), which a
 * shell reports as 128 + n; an exit with that code is as good.
 */
function assertSignalExit(
  r: { code: number | null; signal: NodeJS.Signals | null; stderr: string },
  signal: NodeJS.Signals,
  exit: number,
): void {
  assert.ok(
    r.signal === signal || r.code === exit,
    `ended by ${signal} (shell status ${exit}), got code ${r.code} signal ${r.signal}\n${r.stderr}`,
  );
}

const staging = (): string[] => fs.readdirSync(root).filter((n) => /^\.prepared\.partial-\d+$/.test(n));

for (const [signal, exit, point] of [
  ['SIGINT', 130, 'staging folder created, waiting for data'],
  ['SIGTERM', 143, 'a shard already written into the staging folder'],
] as const) {
  test(`prepare --overwrite, ${signal} when ${point}: exit ${exit}, no temp left, the earlier folder intact`, async () => {
    const kept = hashTree(prepared);
    const fifo = fifoWith(`fifo-${signal}.jsonl`, many());
    try {
      const r = await cliWithSignal(
        ['prepare', '--model', model, '--data', fifo.file, '--out', prepared, '--format', 'jsonl', '--shard-rows', '100', '--overwrite'],
        signal,
        () => {
          const s = staging();
          if (s.length === 0 || !fifo.opened()) return false;
          if (signal === 'SIGINT') return true;
          try {
            return fs.readdirSync(path.join(root, s[0] as string)).some((f) => /^train-\d+\.jsonl$/.test(f));
          } catch {
            return false;
          }
        },
      );
      assert.ok(r.sent, `signal sent\n${r.stderr}`);
      assertSignalExit(r, signal, exit);
      assert.match(r.stderr, new RegExp(`interrupted \\(${signal}\\): removed .*\\.prepared\\.partial-\\d+`));
      assert.doesNotMatch(r.stderr, /INTERNAL|\n\s+at /);
    } finally {
      fifo.close();
    }
    assert.deepEqual(leftovers(root), []);
    assert.deepEqual(hashTree(prepared), kept);
  });
}

test('prepare killed with SIGKILL leaves its staging folder; the next run removes it and says so', async () => {
  const fifo = fifoWith('fifo-kill.jsonl', lines.slice(0, 4));
  const out = path.join(root, 'killed-out');
  let pid = 0;
  try {
    const r = await cliWithSignal(
      ['prepare', '--model', model, '--data', fifo.file, '--out', out, '--quiet'],
      'SIGKILL',
      () => fs.readdirSync(root).some((n) => n.startsWith('.killed-out.partial-')),
      {
        onSpawn: (p) => (pid = p),
      },
    );
    assert.equal(r.signal, 'SIGKILL');
  } finally {
    fifo.close();
  }
  assert.ok(fs.existsSync(path.join(root, `.killed-out.partial-${pid}`)), 'SIGKILL cannot be handled: the staging folder is left');
  assert.ok(!fs.existsSync(out), 'but nothing at the final name');
  const again = cli(['prepare', '--model', model, '--data', data, '--out', out]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`note: removed .*\\.killed-out\\.partial-${pid} \\(left by interrupted process ${pid}\\)`));
  assert.deepEqual(leftovers(root), []);
});

const trainArgs = (out: string) => [
  'train',
  '--model',
  model,
  '--data',
  data,
  '--output-dir',
  out,
  '--batch-size',
  '4',
  '--seed',
  '1',
  '--max-steps',
  '40',
  '--checkpoint-every',
  '2',
];
const progressed = (stderr: string) => /train\s+\d+\/40/.test(stderr);

test('train: SIGINT after the first progress line exits 130 with no temp and a complete checkpoint; --resume continues and says from where', async () => {
  const out = path.join(root, 'run-int');
  const r = await cliWithSignal(trainArgs(out), 'SIGINT', progressed);
  assert.ok(r.sent);
  assertSignalExit(r, 'SIGINT', 130);
  assert.match(r.stderr, /interrupted \(SIGINT\)/);
  assert.deepEqual(leftovers(out), []);
  assert.ok(fs.existsSync(path.join(out, 'checkpoint', 'complete.json')));
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'no final model from an interrupted run');
  const step = (JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'trainer_state.json'), 'utf8')) as { step: number }).step;
  const resumed = cli([...trainArgs(out), '--resume', '--json']);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resumed from step ${step} of 40 \\(.*run-int/checkpoint\\)`));
  assert.equal((JSON.parse(resumed.stdout) as { resumedFrom: number; steps: number }).resumedFrom, step);
  assert.ok(fs.existsSync(path.join(out, 'model.safetensors')));
});

test('train --overwrite: SIGTERM mid-run puts the earlier run back byte-for-byte (exit 143); after SIGKILL mid-run the earlier run is kept aside and reported, and --resume finishes the new one', async () => {
  const out = path.join(root, 'run-term');
  assert.equal(cli(['train', '--model', model, '--data', data, '--output-dir', out, '--max-steps', '1', '--quiet']).code, 0);
  const kept = hashTree(out);
  const r = await cliWithSignal([...trainArgs(out), '--overwrite'], 'SIGTERM', progressed);
  assertSignalExit(r, 'SIGTERM', 143);
  assert.match(r.stderr, /interrupted \(SIGTERM\): restored .*run-term/);
  assert.deepEqual(hashTree(out), kept);
  assert.deepEqual(leftovers(root), []);

  let pid = 0;
  const k = await cliWithSignal([...trainArgs(out), '--overwrite'], 'SIGKILL', progressed, { onSpawn: (p) => (pid = p) });
  assert.equal(k.signal, 'SIGKILL');
  const aside = path.join(root, `.run-term.old-${pid}`);
  assert.deepEqual(hashTree(aside), kept, 'SIGKILL cannot be handled: the earlier run waits, intact, beside the new one');
  const resumed = cli([...trainArgs(out), '--resume', '--json']);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal((JSON.parse(resumed.stdout) as { steps: number }).steps, 40);
  assert.match(
    resumed.stderr,
    new RegExp(`\\.run-term\\.old-${pid} holds what an interrupted --overwrite \\(process ${pid}\\) was replacing`),
  );
  assert.deepEqual(hashTree(aside), kept, 'reported, never deleted');
  assert.deepEqual(leftovers(out), []);
  fs.rmSync(aside, { recursive: true });
});
