/**
 * Issue 10, classes 1 (train's output_dir), 2 (divergence) and 3
 * (checkpoints and resume) through the real CLI, on a 1-layer 16-wide model.
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
/** A finished run (2 steps, checkpoint every step). */
let run = '';

const train = (out: string, ...extra: string[]) =>
  cli(['train', '--model', model, '--data', data, '--output-dir', out, '--batch-size', '4', '--seed', '1', '--quiet', ...extra]);

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-fs-train-'));
  ({ model, data } = await tinySetup(root));
  run = path.join(root, 'run');
  const r = train(run, '--max-steps', '2', '--checkpoint-every', '1');
  assert.equal(r.code, 0, r.stderr);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a run folder carries chatsft-run.json; output_dir that holds a run, a user folder, the model or the data is refused', () => {
  assert.equal((JSON.parse(fs.readFileSync(path.join(run, 'chatsft-run.json'), 'utf8')) as { generator: string }).generator, 'chatsft');
  const kept = hashTree(run);
  assertUserError(
    train(run, '--max-steps', '2'),
    'USAGE',
    /run: output_dir holds an earlier training run \(pass --resume to continue it or --overwrite to replace it\)/,
  );
  assertUserError(
    train(run, '--max-steps', '2', '--resume', '--overwrite'),
    'USAGE',
    /--resume continues a run and --overwrite replaces it/,
  );
  assert.deepEqual(hashTree(run), kept);

  const user = path.join(root, 'user-folder');
  fs.mkdirSync(user);
  fs.writeFileSync(path.join(user, 'thesis.tex'), 'do not lose me');
  const userHash = hashTree(user);
  assertUserError(
    train(user, '--max-steps', '1', '--overwrite'),
    'OUTPUT_REFUSED',
    /user-folder: output_dir is not empty and is not a chatsft training run \(no chatsft-run.json\)/,
  );
  assert.deepEqual(hashTree(user), userHash);

  // The base model's folder, also through a symlink (realpaths are compared), and a folder holding the data.
  const modelHash = hashTree(model);
  const link = path.join(root, 'model-link');
  fs.symlinkSync(model, link);
  for (const out of [model, link])
    assertUserError(train(out, '--max-steps', '1', '--overwrite'), 'OUTPUT_REFUSED', /output_dir is an input of this command/);
  assertUserError(train(root, '--max-steps', '1', '--overwrite'), 'OUTPUT_REFUSED', /output_dir contains an input of this command/);
  assert.deepEqual(hashTree(model), modelHash);
});

test('--resume with nothing to resume refuses and names the folder', () => {
  assertUserError(train(path.join(root, 'missing'), '--max-steps', '2', '--resume'), 'CHECKPOINT_INVALID', /missing: nothing to resume/);
  assert.ok(!fs.existsSync(path.join(root, 'missing')), 'no folder created by a refused resume');
  const noCk = path.join(root, 'no-checkpoint');
  assert.equal(train(noCk, '--max-steps', '1').code, 0);
  assertUserError(
    train(noCk, '--max-steps', '1', '--resume'),
    'CHECKPOINT_INVALID',
    /no-checkpoint: nothing to resume: no complete checkpoint/,
  );
});

test('a non-finite loss or gradient stops training: exit 2, step and last finite loss, hint; last good checkpoint kept, no model written', () => {
  const out = path.join(root, 'diverged');
  const r = train(out, '--max-steps', '4', '--lr', '1e30', '--checkpoint-every', '1');
  assertUserError(
    r,
    'TRAINING_DIVERGED',
    /diverged: training diverged at step 2: (loss|gradient norm) (NaN|-?Infinity) \(last finite loss \d+\.\d+ at step 1\)/,
  );
  assert.match(r.stderr, /last good checkpoint \(step 1\) is kept/);
  assert.match(r.stderr, /lower lr \(now 1e\+30\) or max_grad_norm/);
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'no model written');
  assert.ok(fs.existsSync(path.join(out, 'checkpoint', 'complete.json')));
  assert.equal((JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'trainer_state.json'), 'utf8')) as { step: number }).step, 1);
  // Finite loss and gradient, but the update overflows the weights: the final save refuses them.
  const inf = path.join(root, 'overflow');
  assertUserError(
    train(inf, '--max-steps', '1', '--lr', '3e38'),
    'TRAINING_DIVERGED',
    /overflow: training diverged by step 1: weight .* has a non-finite value, so no model is written/,
  );
  assert.ok(!fs.existsSync(path.join(inf, 'model.safetensors')));
});

test('--overwrite replaces an earlier run only when the new one succeeds; a failed one puts it back byte-for-byte', () => {
  const kept = hashTree(run);
  const bad = train(run, '--max-steps', '4', '--lr', '1e30', '--overwrite');
  assertUserError(bad, 'TRAINING_DIVERGED', /This --overwrite run .*was discarded and the earlier run put back/);
  assert.deepEqual(hashTree(run), kept);
  assert.deepEqual(leftovers(root), []);
  const good = train(run, '--max-steps', '1', '--overwrite', '--json');
  assert.equal(good.code, 0, good.stderr);
  assert.equal((JSON.parse(good.stdout) as { steps: number }).steps, 1);
  assert.ok(!fs.existsSync(path.join(run, 'checkpoint')), 'the old run is gone, its checkpoint with it');
  assert.deepEqual(leftovers(root), []);
});

test('resume finds the checkpoint an interrupted save left in .tmp-PID, drops torn ones and a torn metrics line, and says where it resumed', () => {
  const out = path.join(root, 'interrupted');
  const args = ['--max-steps', '3', '--checkpoint-every', '1'];
  assert.equal(train(out, ...args).code, 0);
  // A kill between the two renames of the step-3 save: no checkpoint/, the complete one in .tmp-PID,
  // an older complete one in .old-PID, and a torn one (no complete.json) from another dead writer.
  fs.renameSync(path.join(out, 'checkpoint'), path.join(out, `checkpoint.tmp-${DEAD_PID}`));
  fs.cpSync(path.join(out, `checkpoint.tmp-${DEAD_PID}`), path.join(out, `checkpoint.old-${DEAD_PID}`), { recursive: true });
  const olderState = path.join(out, `checkpoint.old-${DEAD_PID}`, 'trainer_state.json');
  fs.writeFileSync(olderState, JSON.stringify({ ...(JSON.parse(fs.readFileSync(olderState, 'utf8')) as object), step: 2 }));
  fs.cpSync(path.join(out, `checkpoint.tmp-${DEAD_PID}`), path.join(out, `checkpoint.tmp-${DEAD_PID + 1}`), { recursive: true });
  fs.rmSync(path.join(out, `checkpoint.tmp-${DEAD_PID + 1}`, 'complete.json'));
  fs.writeFileSync(path.join(out, `model.safetensors.tmp-${DEAD_PID}-1700000000000`), 'half a file');
  fs.appendFileSync(path.join(out, 'metrics.jsonl'), '{"step": 4, "loss": 2.');
  const r = cli(['train', '--model', model, '--data', data, '--output-dir', out, '--batch-size', '4', '--seed', '1', ...args, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /recovered the step-3 checkpoint an interrupted save left in checkpoint\.tmp-4206649/);
  assert.match(r.stderr, /removed an older checkpoint left by an interrupted save \(checkpoint\.old-4206649\)/);
  assert.match(r.stderr, /removed a torn checkpoint left by an interrupted save \(checkpoint\.tmp-4206650\)/);
  assert.match(r.stderr, /metrics\.jsonl:4: dropped a torn last line/);
  assert.match(r.stderr, /resumed from step 3 of 3 \(.*interrupted\/checkpoint\)/);
  assert.match(r.stdout, /resumed from step 3/);
  assert.deepEqual(leftovers(out), []);
  const steps = fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual(steps, [1, 2, 3]);
  // A bad line before the end is corruption, not a torn append: a clear error naming file:line.
  const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n');
  lines[1] = '{"step": 2, "lo';
  fs.writeFileSync(path.join(out, 'metrics.jsonl'), lines.join('\n'));
  assertUserError(train(out, ...args, '--resume'), 'FILE_CORRUPT', /metrics\.jsonl:2: not a metrics line/);
});
