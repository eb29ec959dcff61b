/**
 * Large-model paths on a small model: gradient checkpointing and host-offloaded
 * layer weights give the same loss and gradients as the taped all-in-heap path
 * (within 1e-5), for LoRA (with dropout, trained token rows) and full
 * fine-tuning; generation and eval match too; nothing leaks.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { collate } from '../src/batch/collate.js';
import type { Row } from '../src/batch/types.js';
import { initEngine, tf } from '../src/engine/backend.js';
import { makeLlamaConfig } from '../src/hf/config.js';
import { evalLoss } from '../src/engine/forward.js';
import { createKvCache, disposeKvCache, forwardWithCache } from '../src/engine/infer.js';
import { addLora } from '../src/engine/lora.js';
import { createModel, disposeModel, loadModel, saveModel, type LlamaModel } from '../src/engine/model.js';
import { Rng } from '../src/engine/rng.js';
import { accumulateGradients } from '../src/engine/step.js';
import { hostLayerCount } from '../src/engine/weights.js';

let dir = '';
before(async () => {
  await initEngine();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-scale-'));
  // Qwen2-style: q/k/v biases, grouped-query attention, tied embeddings, bf16 on disk.
  const config = makeLlamaConfig({
    modelType: 'qwen2',
    vocabSize: 67,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 3,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    tieWordEmbeddings: true,
  });
  const m = createModel(config, 3);
  saveModel(m, dir, undefined, { dtype: 'BF16' });
  disposeModel(m);
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function rows(seed: number, n: number, vocab: number): Row[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const len = 4 + Math.floor(rng.next() * 9);
    const inputIds = Array.from({ length: len }, () => Math.floor(rng.next() * vocab));
    return { inputIds, labels: inputIds.map((id, i) => (i >= 1 && rng.next() < 0.7 ? id : -100)) };
  });
}

function grads(model: LlamaModel, seed: number): { loss: number; g: Map<string, Float32Array> } {
  const rs = rows(seed, 6, model.config.vocabSize);
  // A packed row too: segments must not see each other in the recomputed layers either.
  const packed: Row = {
    inputIds: rs[4]!.inputIds.concat(rs[5]!.inputIds),
    labels: rs[4]!.labels.concat(rs[5]!.labels),
    seqLengths: [rs[4]!.inputIds.length, rs[5]!.inputIds.length],
  };
  const micro = [
    collate(rs.slice(0, 2), { padId: 0, paddingSide: 'right' }),
    collate([rs[2]!, rs[3]!, packed], { padId: 0, paddingSide: 'left' }),
  ];
  const r = accumulateGradients(model, micro, new Rng(11));
  const g = new Map<string, Float32Array>();
  for (const [k, t] of r.grads) {
    g.set(k, t.dataSync() as Float32Array);
    t.dispose();
  }
  return { loss: r.loss, g };
}

function assertClose(a: Map<string, Float32Array>, b: Map<string, Float32Array>, tol: number): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, x] of a) {
    const y = b.get(k)!;
    let worst = 0;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    assert.ok(worst <= tol, `${k}: max |Δ| ${worst} > ${tol}`);
  }
}

function variants(setup: (m: LlamaModel) => void): { name: string; loss: number; g: Map<string, Float32Array> }[] {
  const out = [];
  for (const [name, hostLayers, ckpt] of [
    ['taped', 0, false],
    ['checkpointed', 0, true],
    ['offloaded', 3, true],
    ['half offloaded', 2, false],
  ] as const) {
    const m = loadModel(dir, { hostLayers });
    assert.equal(hostLayerCount(m), hostLayers);
    m.gradientCheckpointing = ckpt;
    setup(m);
    const before = tf.memory().numTensors;
    const r = grads(m, 5);
    assert.equal(tf.memory().numTensors, before, `${name}: no tensors leak`);
    out.push({ name, ...r });
    disposeModel(m);
  }
  return out;
}

test('LoRA (dropout, trained token rows): checkpointing and offload give the taped loss and gradients', () => {
  const vs = variants((m) =>
    addLora(
      m,
      {
        r: 4,
        alpha: 8,
        dropout: 0.1,
        targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
        trainTokenIds: [3, 60],
      },
      7,
    ),
  );
  const ref = vs[0]!;
  // B starts at zero, so A's gradients are zero at step 0: B's and the rows' carry the comparison.
  assert.ok([...ref.g.values()].some((g) => g.some((v) => v !== 0)));
  for (const v of vs.slice(1)) {
    assert.ok(Math.abs(v.loss - ref.loss) <= 1e-5, `${v.name}: loss ${v.loss} vs ${ref.loss}`);
    assertClose(v.g, ref.g, 1e-5);
  }
});

test('LoRA without token rows: frozen [d, V] head and host embedding table give the taped gradients', () => {
  const spec = { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj', 'down_proj'], trainTokenIds: [] };
  const a = loadModel(dir);
  addLora(a, spec, 7);
  const ref = grads(a, 4);
  disposeModel(a);
  const b = loadModel(dir, { hostLayers: 2, hostEmbedding: true, frozenHead: true });
  b.gradientCheckpointing = true;
  addLora(b, spec, 7);
  const before = tf.memory().numTensors;
  const got = grads(b, 4);
  assert.equal(tf.memory().numTensors, before);
  disposeModel(b);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5, `loss ${got.loss} vs ${ref.loss}`);
  assertClose(got.g, ref.g, 1e-5);
});

test('full fine-tuning: checkpointing gives the taped loss and gradients', () => {
  const m0 = loadModel(dir);
  const ref = grads(m0, 9);
  disposeModel(m0);
  const m1 = loadModel(dir);
  m1.gradientCheckpointing = true;
  const got = grads(m1, 9);
  disposeModel(m1);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5);
  assertClose(got.g, ref.g, 1e-5);
});

test('offloaded layers: eval loss and cached generation logits equal the in-heap model', () => {
  const a = loadModel(dir);
  const b = loadModel(dir, { hostLayers: 3 });
  const batch = collate(rows(2, 3, 67), { padId: 0, paddingSide: 'right' });
  const la = evalLoss(a, batch);
  const lb = evalLoss(b, batch);
  assert.ok(Math.abs(la.sum - lb.sum) < 1e-4 * Math.max(1, la.sum));
  const logitsOf = (m: LlamaModel): Float32Array[] => {
    const cache = createKvCache(m, 1, 16);
    const out = [forwardWithCache(m, [[5, 9, 2, 40]], cache, [[0, 1, 2, 3]]), forwardWithCache(m, [[7]], cache, [[4]])];
    disposeKvCache(cache);
    return out;
  };
  const before = tf.memory().numTensors;
  const [pa, da] = logitsOf(a);
  const [pb, db] = logitsOf(b);
  assert.equal(tf.memory().numTensors, before);
  for (const [x, y] of [
    [pa!, pb!],
    [da!, db!],
  ] as const)
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) < 1e-4);
  disposeModel(a);
  disposeModel(b);
});
