/**
 * Numerics against a reference PyTorch implementation of the HF forward
 * (test/reference/llama_ref.py, float64): random checkpoints in HF layout
 * (GQA + untied head, Qwen2-style qkv bias, Qwen3-style q/k norm with tied
 * head), a padded and a packed batch; masked summed CE must agree to 1e-4.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { collate } from '../src/batch/collate.js';
import type { Batch, Row } from '../src/batch/types.js';
import { initEngine } from '../src/engine/backend.js';
import { makeLlamaConfig, parseLlamaConfig, toHfConfig, type LlamaConfig } from '../src/hf/config.js';
import { evalLoss, lossForGrad } from '../src/engine/forward.js';
import {
  createModel,
  disposeModel,
  exportTensors,
  isLinearWeight,
  loadModel,
  modelFromTensors,
  saveModel,
  transpose2d,
} from '../src/engine/model.js';
import { accumulateGradients } from '../src/engine/step.js';
import { Rng } from '../src/engine/rng.js';
import { tf } from '../src/engine/backend.js';

const PY = '/usr/bin/python3';
const REF = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'test', 'reference', 'llama_ref.py');
const hasTorch = spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

function randomRow(rng: Rng, len: number, vocab: number): Row {
  const inputIds = Array.from({ length: len }, () => Math.floor(rng.next() * vocab));
  // Supervise roughly the second half, like an assistant turn.
  const labels = inputIds.map((id, i) => (i >= len / 2 ? id : -100));
  return { inputIds, labels };
}

function packRows(rows: Row[]): Row {
  return {
    inputIds: rows.flatMap((r) => r.inputIds),
    labels: rows.flatMap((r) => r.labels),
    positionIds: rows.flatMap((r) => r.inputIds.map((_, i) => i)),
    seqLengths: rows.map((r) => r.inputIds.length),
  };
}

function batchJson(b: Batch): string {
  const rows = (a: Int32Array): number[][] =>
    Array.from({ length: b.batchSize }, (_, i) => Array.from(a.subarray(i * b.seqLen, (i + 1) * b.seqLen)));
  return JSON.stringify({
    input_ids: rows(b.inputIds),
    labels: rows(b.labels),
    position_ids: rows(b.positionIds),
    segment_ids: rows(b.segmentIds),
  });
}

const configs: [string, LlamaConfig][] = [
  [
    'llama GQA untied',
    makeLlamaConfig({
      vocabSize: 97,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      ropeTheta: 500000,
    }),
  ],
  [
    'llama attention_bias (q/k/v/o bias)',
    makeLlamaConfig({ vocabSize: 67, hiddenSize: 32, intermediateSize: 40, numHiddenLayers: 1, numAttentionHeads: 2, attentionBias: true }),
  ],
  [
    'llama3 rope_scaling',
    parseLlamaConfig({
      ...toHfConfig(
        makeLlamaConfig({
          vocabSize: 71,
          hiddenSize: 32,
          intermediateSize: 40,
          numHiddenLayers: 1,
          numAttentionHeads: 2,
          numKeyValueHeads: 1,
        }),
      ),
      // A short original context so high, medium (smoothed) and low frequency bands all occur at head_dim 16.
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    }),
  ],
  [
    'qwen2 qkv bias',
    makeLlamaConfig({
      modelType: 'qwen2',
      vocabSize: 89,
      hiddenSize: 32,
      intermediateSize: 40,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 1,
    }),
  ],
  [
    'qwen3 qk norm tied head_dim',
    makeLlamaConfig({
      modelType: 'qwen3',
      vocabSize: 101,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 16,
      tieWordEmbeddings: true,
    }),
  ],
];

test('engine matches the PyTorch reference (masked CE and gradients, rel. diff < 1e-4)', async (t) => {
  if (!hasTorch) {
    t.skip(`${PY} cannot import torch (apt-get install python3-torch); parity not checked`);
    return;
  }
  await initEngine();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-parity-'));
  try {
    for (const [name, config] of configs) {
      const model0 = createModel(config, 7);
      // HF-style init leaves biases at 0 and norms at 1: randomise them so they are tested too.
      const tensors = exportTensors(model0);
      const prng = new Rng(11);
      for (const [pname, t] of tensors) {
        if (pname.endsWith('.bias')) t.data.forEach((_, i) => (t.data[i] = prng.normal() * 0.1));
        if (pname.endsWith('norm.weight')) t.data.forEach((_, i) => (t.data[i] = 1 + prng.normal() * 0.1));
      }
      disposeModel(model0);
      const model1 = modelFromTensors(config, tensors, 'random');
      const mdir = path.join(dir, name.replace(/[ /()]/g, '_'));
      saveModel(model1, mdir);
      disposeModel(model1);
      // Reload so the test also covers the safetensors round trip.
      const model = loadModel(mdir);
      const rng = new Rng(3);
      const rows = [randomRow(rng, 11, config.vocabSize), randomRow(rng, 7, config.vocabSize), randomRow(rng, 4, config.vocabSize)];
      const batches: [string, Batch][] = [
        ['padded right', collate(rows, { padId: 0, paddingSide: 'right' })],
        ['padded left', collate(rows, { padId: 0, paddingSide: 'left' })],
        ['packed', collate([packRows(rows), packRows([rows[2]!, rows[1]!])], { padId: 0, paddingSide: 'right' })],
      ];
      for (const [bname, batch] of batches) {
        const bfile = path.join(dir, 'batch.json');
        fs.writeFileSync(bfile, batchJson(batch));
        const ref = JSON.parse(execFileSync(PY, [REF, mdir, bfile, '--grads'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as {
          loss_sum: number;
          count: number;
          grads: Record<string, number[]>;
        };
        const ours = evalLoss(model, batch);
        assert.equal(ours.count, ref.count, `${name} / ${bname}: supervised count`);
        const rel = Math.abs(ours.sum - ref.loss_sum) / Math.abs(ref.loss_sum);
        assert.ok(rel < 1e-4, `${name} / ${bname}: loss ${ours.sum} vs torch ${ref.loss_sum} (rel ${rel})`);
        // The training path (fused head + custom grads) computes the same value.
        const g = tf.tidy(() => lossForGrad(model, batch, 1, { training: true }).loss.dataSync()[0]!);
        assert.ok(
          Math.abs(g - ref.loss_sum) / Math.abs(ref.loss_sum) < 1e-4,
          `${name} / ${bname}: training-path loss ${g} vs ${ref.loss_sum}`,
        );
        // Hand-written backward passes against torch autograd (grads of the summed loss).
        const { grads, tokens } = accumulateGradients(model, [batch]);
        for (const [pname, gt] of grads) {
          let ours = Array.from(gt.dataSync(), (x) => x * tokens);
          gt.dispose();
          if (isLinearWeight(pname)) {
            const [i, o] = model.params.get(pname)!.shape as [number, number];
            ours = Array.from(transpose2d(Float32Array.from(ours), i, o));
          }
          const want = ref.grads[pname]!;
          let num = 0;
          let den = 0;
          for (let j = 0; j < want.length; j++) {
            num += (ours[j]! - want[j]!) ** 2;
            den += want[j]! ** 2;
          }
          assert.ok(
            Math.sqrt(num) <= 1e-4 * Math.sqrt(den) + 1e-7,
            `${name} / ${bname}: gradient of ${pname} rel diff ${Math.sqrt(num / den)}`,
          );
        }
      }
      disposeModel(model);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
