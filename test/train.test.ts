/**
 * The training loop: a tiny run learns (loss falls) and writes a complete
 * folder; a killed-and-resumed run reproduces the uninterrupted loss curve
 * and weights exactly; data that supervise no EOT are refused.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Row } from '../src/batch/types.js';
import { ChatsftError } from '../src/errors.js';
import {
  initEngine,
  makeLlamaConfig,
  createModel,
  disposeModel,
  loadModel,
  evalLoss,
  Rng,
  readSafetensors,
  tf,
} from '../src/engine/index.js';
import { collate } from '../src/batch/collate.js';
import { runTraining, readMetrics, type TrainHyperParams } from '../src/train/index.js';

const EOT = 2;
const V = 40;

before(async () => {
  await initEngine();
});

/** "prompt" tokens (unsupervised) then a reply that is a fixed function of the prompt, closed by EOT. */
function chatRows(seed: number, n: number): Row[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const p = Array.from({ length: 3 + Math.floor(rng.next() * 4) }, () => 5 + Math.floor(rng.next() * 30));
    const reply = [...p.map((x) => ((x * 7) % 30) + 5), EOT];
    return { inputIds: [1, ...p, 3, ...reply], labels: [...new Array<number>(p.length + 2).fill(-100), ...reply] };
  });
}

const config = () =>
  makeLlamaConfig({ vocabSize: V, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2 });
const hp = (over: Partial<TrainHyperParams> = {}): TrainHyperParams => ({
  lr: 3e-3,
  weightDecay: 0.01,
  warmupSteps: 2,
  schedule: 'cosine',
  maxGradNorm: 1,
  batchSize: 4,
  gradAccum: 2,
  maxSteps: 8,
  seed: 5,
  ...over,
});
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-train-'));

test('a tiny run lowers the loss and writes a complete, reloadable folder', async () => {
  const dir = tmp();
  const rows = chatRows(1, 32);
  const live = tf.memory().numTensors;
  const model = createModel(config(), 1);
  const evalRows = chatRows(2, 8);
  let finalized = '';
  const steps: number[] = [];
  const events: string[] = [];
  const res = await runTraining({
    model,
    rows,
    evalRows,
    padId: 0,
    paddingSide: 'right',
    eotIds: [EOT],
    hp: hp({ maxSteps: 40, lr: 1e-2 }),
    evalEverySteps: 10,
    outputDir: dir,
    finalizeFolder: (d) => {
      finalized = d;
    },
    onStep: (e) => {
      steps.push(e.step);
      events.push(`done ${e.step}`);
    },
    onStepProgress: (e) => events.push(`${e.step}/${e.totalSteps} ${e.phase} ${e.micro}/${e.micros}`),
  });
  assert.equal(res.steps, 40);
  // Progress inside each step (grad_accum 2, taped path: micro-batch ticks) comes before the step's own event.
  assert.deepEqual(
    events,
    Array.from({ length: 40 }, (_, i) => [`${i + 1}/40 micro 1/2`, `${i + 1}/40 micro 2/2`, `done ${i + 1}`]).flat(),
  );
  assert.deepEqual(
    steps,
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  const early = res.losses.slice(0, 3).reduce((a, b) => a + b) / 3;
  const late = res.losses.slice(-3).reduce((a, b) => a + b) / 3;
  assert.ok(late < 0.7 * early, `loss ${early} → ${late}`);
  assert.equal(res.supervisedEot, 32);
  assert.equal(finalized, dir);
  for (const f of ['model.safetensors', 'config.json', 'metrics.jsonl', 'loss.svg']) assert.ok(fs.existsSync(path.join(dir, f)), f);
  const metrics = readMetrics(dir);
  assert.equal(metrics.length, 40);
  assert.ok(metrics.filter((m) => m.eval_loss !== undefined).length >= 4, 'eval loss every 10 steps and at the end');
  assert.ok(fs.readFileSync(path.join(dir, 'loss.svg'), 'utf8').startsWith('<svg'));
  const reloaded = loadModel(dir);
  const b = collate(evalRows, { padId: 0, paddingSide: 'right' });
  const a1 = evalLoss(model, b);
  const a2 = evalLoss(reloaded, b);
  assert.ok(Math.abs(a1.sum - a2.sum) < 1e-5 * a1.sum);
  assert.ok(Math.abs(a1.sum / a1.count - res.evalLoss!) < 1e-6);
  disposeModel(model);
  disposeModel(reloaded);
  assert.equal(tf.memory().numTensors, live, 'a run leaves no tensors behind');
  fs.rmSync(dir, { recursive: true });
});

test('resume after a kill reproduces the uninterrupted run (LoRA with dropout, trained token rows)', async () => {
  const rows = chatRows(3, 24);
  const lora = {
    r: 4,
    alpha: 8,
    dropout: 0.1,
    targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    trainTokenIds: [EOT, 3],
  };
  const common = { rows, padId: 0, paddingSide: 'left' as const, eotIds: [EOT], hp: hp(), lora, checkpointEvery: 3 };
  const full = tmp();
  const live = tf.memory().numTensors;
  const m1 = createModel(config(), 7);
  const a = await runTraining({ ...common, model: m1, outputDir: full });
  const killed = tmp();
  const m2 = createModel(config(), 7);
  const partial = await runTraining({ ...common, model: m2, outputDir: killed, stopAfterSteps: 5 });
  assert.equal(partial.steps, 5);
  disposeModel(m2);
  const m3 = createModel(config(), 7);
  const b = await runTraining({ ...common, model: m3, outputDir: killed, resume: true });
  assert.equal(b.resumedFrom, 3);
  assert.deepEqual(b.losses, a.losses, 'loss curve');
  assert.deepEqual(
    readMetrics(killed).map((m) => m.loss),
    readMetrics(full).map((m) => m.loss),
  );
  const wa = readSafetensors(path.join(full, 'model.safetensors')).tensors;
  const wb = readSafetensors(path.join(killed, 'model.safetensors')).tensors;
  for (const [k, t] of wa) assert.deepEqual(wb.get(k)!.data, t.data, k);
  const adapter = readSafetensors(path.join(full, 'adapter', 'adapter_model.safetensors')).tensors;
  assert.deepEqual(adapter.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!.shape, [4, 32]);
  assert.deepEqual(adapter.get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')!.shape, [32, 4]);
  assert.deepEqual(adapter.get('base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta')!.shape, [2, 32]);
  const cfg = JSON.parse(fs.readFileSync(path.join(full, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg['peft_type'], 'LORA');
  assert.equal(cfg['r'], 4);
  // A resume with other hyper-parameters is refused.
  const m4 = createModel(config(), 7);
  await assert.rejects(
    runTraining({ ...common, hp: hp({ lr: 1 }), model: m4, outputDir: killed, resume: true }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'CHECKPOINT_INVALID',
  );
  [m1, m3, m4].forEach(disposeModel);
  assert.equal(tf.memory().numTensors, live, 'LoRA runs, checkpoints and resumes leave no tensors behind');
  fs.rmSync(full, { recursive: true });
  fs.rmSync(killed, { recursive: true });
});

test('rows that supervise no EOT are refused unless allowed', async () => {
  const rows = chatRows(4, 8).map((r) => ({ ...r, labels: r.labels.map((y) => (y === EOT ? -100 : y)) }));
  const dir = tmp();
  const model = createModel(config(), 1);
  await assert.rejects(
    runTraining({ model, rows, padId: 0, paddingSide: 'right', eotIds: [EOT], hp: hp({ maxSteps: 1 }), outputDir: dir }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'NO_EOT_SUPERVISED',
  );
  const res = await runTraining({
    model,
    rows,
    padId: 0,
    paddingSide: 'right',
    eotIds: [EOT],
    allowNoEot: true,
    hp: hp({ maxSteps: 1 }),
    outputDir: dir,
  });
  assert.equal(res.supervisedEot, 0);
  assert.equal(res.steps, 1);
  disposeModel(model);
  fs.rmSync(dir, { recursive: true });
});
