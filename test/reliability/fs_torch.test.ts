/**
 * Issue 10 classes 2, 3 and 9 on `--engine torch` (issue 12's worker),
 * through the real CLI on a 1-layer 16-wide model: divergence is the
 * embedded engine's TRAINING_DIVERGED with the last good checkpoint kept;
 * checkpoints follow the same completeness rule (complete.json last, the
 * newest complete sibling of an interrupted save is recovered); --resume
 * with nothing to resume refuses; SIGINT stops the worker's process group
 * and leaves no temps, and the run resumes to the same losses.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSafetensors } from '../../src/engine/safetensors.js';
import { assertUserError, cli, cliWithSignal, DEAD_PID, leftovers, tinySetup } from './harness.js';

const PY = '/usr/bin/python3';
const hasTorch = spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const SKIP = `${PY} cannot import torch (apt-get install python3-torch libopenblas0-pthread): torch engine reliability not checked`;

let root = '';
let model = '';
let data = '';

const args = (out: string, ...extra: string[]): string[] => [
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
  '--engine',
  'torch',
  '--python',
  PY,
  '--quiet',
  ...extra,
];
const train = (out: string, ...extra: string[]) => cli(args(out, ...extra), {}, 120_000);
const losses = (dir: string): number[] =>
  fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { loss: number }).loss);

/** Processes whose command line mentions `dir` (the worker is started on `dir/.torch-job/job.json`). */
function processesUsing(dir: string): number[] {
  const found: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir)) found.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-torch-'));
  ({ model, data } = await tinySetup(root));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('torch: lr 1e30 stops with TRAINING_DIVERGED (step, last finite loss), exit 2, no model written, last good checkpoint kept', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const out = path.join(root, 'diverge');
  const r = train(out, '--max-steps', '4', '--lr', '1e30', '--checkpoint-every', '1');
  assertUserError(
    r,
    'TRAINING_DIVERGED',
    /training diverged at step (\d+): (loss|gradient norm) (NaN|-?Infinity) \(last finite loss \d+\.\d{4} at step \d+\)/,
  );
  const step = Number(/diverged at step (\d+)/.exec(r.stderr)![1]);
  assert.ok(step >= 2, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(`last good checkpoint \\(step ${step - 1}\\) is kept in .*checkpoint.*Try a lower lr \\(now 1e\\+30\\)`),
  );
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'no model of NaNs');
  const marker = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'complete.json'), 'utf8')) as { step: number };
  assert.equal(marker.step, step - 1);
  for (const [name, tensor] of readSafetensors(path.join(out, 'checkpoint', 'state.safetensors')).tensors) {
    assert.ok(
      tensor.data.every((x) => Number.isFinite(x)),
      `checkpoint tensor ${name} is finite`,
    );
  }
  assert.equal(losses(out).length, step - 1, 'metrics stop at the last finite step');
  assert.deepEqual(leftovers(out), []);
  assert.ok(!fs.existsSync(path.join(out, '.torch-job')), 'job files removed');
});

test('torch: --resume with nothing to resume refuses and names the folder', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  assertUserError(train(path.join(root, 'missing'), '--max-steps', '1', '--resume'), 'CHECKPOINT_INVALID', /missing: nothing to resume/);
  const noCk = path.join(root, 'no-checkpoint');
  assert.equal(train(noCk, '--max-steps', '1').code, 0);
  const before = fs.readFileSync(path.join(noCk, 'model.safetensors'));
  assertUserError(
    train(noCk, '--max-steps', '1', '--resume'),
    'CHECKPOINT_INVALID',
    /no-checkpoint: nothing to resume: no complete checkpoint/,
  );
  assert.ok(fs.readFileSync(path.join(noCk, 'model.safetensors')).equals(before), 'the finished run is untouched');
});

test('torch: SIGINT stops the worker group, leaves no temps; a save interrupted between its renames is recovered; resume equals an uninterrupted run', async (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const steps = ['--max-steps', '30', '--checkpoint-every', '2'];
  const ref = path.join(root, 'ref');
  assert.equal(train(ref, ...steps).code, 0);

  const out = path.join(root, 'interrupted');
  const marker = path.join(out, 'checkpoint', 'complete.json');
  const r = await cliWithSignal(args(out, ...steps), 'SIGINT', () => fs.existsSync(marker), { timeoutMs: 120_000 });
  assert.ok(r.sent, `interrupted before the end\n${r.stderr}`);
  assert.ok(r.signal === 'SIGINT' || r.code === 130, `ended by the interrupt (code ${r.code}, signal ${r.signal})\n${r.stderr}`);
  assert.deepEqual(processesUsing(out), [], 'no worker process outlives the CLI');
  assert.deepEqual(leftovers(out), [], 'no checkpoint.tmp-PID / .old-PID left');
  assert.ok(!fs.existsSync(path.join(out, '.torch-job')), 'job files removed');
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'no final model from an interrupted run');
  const step = (JSON.parse(fs.readFileSync(marker, 'utf8')) as { step: number }).step;
  assert.ok(step >= 2 && step < 30);

  // A kill between the save's two renames: the complete checkpoint sits in .old-PID, a torn newer one in .tmp-PID.
  const ck = path.join(out, 'checkpoint');
  fs.renameSync(ck, `${ck}.old-${DEAD_PID}`);
  fs.cpSync(`${ck}.old-${DEAD_PID}`, `${ck}.tmp-${DEAD_PID}`, { recursive: true });
  fs.rmSync(path.join(`${ck}.tmp-${DEAD_PID}`, 'complete.json'));
  fs.writeFileSync(path.join(`${ck}.tmp-${DEAD_PID}`, 'trainer_state.json'), JSON.stringify({ step: step + 2 }));
  // A torn trailing metrics line (the kill came mid-append).
  fs.appendFileSync(path.join(out, 'metrics.jsonl'), '{"step": 99, "lo');

  const resumed = cli(
    args(out, ...steps, '--resume').filter((a) => a !== '--quiet'),
    {},
    120_000,
  );
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(
    resumed.stderr,
    new RegExp(`recovered the step-${step} checkpoint an interrupted save left in checkpoint\\.old-${DEAD_PID}`),
  );
  assert.match(resumed.stderr, /removed a torn checkpoint left by an interrupted save/);
  assert.match(resumed.stderr, new RegExp(`resumed from step ${step} of 30`));
  assert.deepEqual(leftovers(out), []);
  const a = losses(out);
  const b = losses(ref);
  assert.equal(a.length, 30);
  for (let i = 0; i < 30; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-5, `step ${i + 1}: resumed ${a[i]} vs uninterrupted ${b[i]}`);
});
