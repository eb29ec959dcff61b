/**
 * resizeTokenEmbeddings on a model whose embedding table stays in host memory
 * and whose head is the frozen [d, V] matrix (issue 11): the table is resized
 * on the host in its stored dtype and the head rebuilt, never moved into the
 * heap, and the result computes what the in-heap resized model computes.
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
import { addLora } from '../src/engine/lora.js';
import { createModel, disposeModel, hfTensor, loadModel, resizeTokenEmbeddings, saveModel, type LlamaModel } from '../src/engine/model.js';
import { Rng } from '../src/engine/rng.js';
import { accumulateGradients } from '../src/engine/step.js';
import { f32ToBf16, halfToF32 } from '../src/hf/safetensors.js';
import { ChatsftError } from '../src/errors.js';

const V = 40;
const NEW_V = 43; // three added tokens
let dir = '';
before(async () => {
  await initEngine();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-resize-'));
  for (const tie of [true, false]) {
    const config = makeLlamaConfig({
      modelType: 'qwen2',
      vocabSize: V,
      hiddenSize: 16,
      intermediateSize: 24,
      numHiddenLayers: 2,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
      tieWordEmbeddings: tie,
    });
    const m = createModel(config, 4);
    saveModel(m, path.join(dir, `f32-${tie}`), undefined, { dtype: 'F32' });
    if (tie) saveModel(m, path.join(dir, 'bf16'), undefined, { dtype: 'BF16' });
    disposeModel(m);
  }
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Rows that use the added tokens (ids V..NEW_V-1) as inputs and targets. */
function rows(): Row[] {
  const rng = new Rng(9);
  return Array.from({ length: 4 }, (_, k) => {
    const inputIds = Array.from({ length: 6 + k }, (_, i) => (i % 3 === 2 ? V + (k % 3) : Math.floor(rng.next() * NEW_V)));
    return { inputIds, labels: inputIds.map((id, i) => (i === 0 ? -100 : id)) };
  });
}

function lossAndGrads(m: LlamaModel): { loss: number; g: Map<string, Float32Array> } {
  addLora(m, { r: 2, alpha: 4, dropout: 0, targets: ['q_proj', 'v_proj'], trainTokenIds: [] }, 3);
  // B starts at zero: one plain update-free gradient still reaches B through the (resized) head.
  const r = accumulateGradients(m, [collate(rows(), { padId: 0, paddingSide: 'right' })]);
  const g = new Map<string, Float32Array>();
  for (const [k, t] of r.grads) {
    g.set(k, t.dataSync() as Float32Array);
    t.dispose();
  }
  return { loss: r.loss, g };
}

for (const tie of [true, false]) {
  test(`host embedding table + frozen head (${tie ? 'tied' : 'untied'}): resized on the host, same loss and gradients as the heap model`, () => {
    const live = tf.memory().numTensors;
    const src = path.join(dir, `f32-${tie}`);
    const a = loadModel(src);
    resizeTokenEmbeddings(a, NEW_V);
    const b = loadModel(src, { hostLayers: 1, hostEmbedding: true, frozenHead: true });
    b.gradientCheckpointing = true;
    resizeTokenEmbeddings(b, NEW_V);
    assert.equal(b.config.vocabSize, NEW_V);
    assert.ok(!b.params.has('model.embed_tokens.weight'), 'the table did not move into the heap');
    const table = b.host!.get('model.embed_tokens.weight')!;
    assert.deepEqual(table.shape, [NEW_V, 16]);
    assert.deepEqual(b.headT!.shape, [16, NEW_V]);
    if (!tie) assert.equal(b.headT, b.params.get('lm_head.weight'), 'untied: the frozen head is the resized lm_head');
    // New rows are the mean of the old ones.
    const e = hfTensor(b, 'model.embed_tokens.weight');
    for (let j = 0; j < 16; j++) {
      let s = 0;
      for (let r = 0; r < V; r++) s += e[r * 16 + j]!;
      for (let r = V; r < NEW_V; r++) assert.ok(Math.abs(e[r * 16 + j]! - s / V) < 1e-6);
    }
    const batch = collate(rows(), { padId: 0, paddingSide: 'right' });
    const la = evalLoss(a, batch);
    const lb = evalLoss(b, batch);
    assert.ok(Math.abs(la.sum - lb.sum) < 1e-4 * la.sum, `eval ${la.sum} vs ${lb.sum}`);
    const ga = lossAndGrads(a);
    const gb = lossAndGrads(b);
    assert.ok(Math.abs(ga.loss - gb.loss) < 1e-5, `loss ${ga.loss} vs ${gb.loss}`);
    assert.deepEqual([...ga.g.keys()].sort(), [...gb.g.keys()].sort());
    for (const [k, x] of ga.g) {
      const y = gb.g.get(k)!;
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) < 1e-5, `${k}[${i}]: ${x[i]} vs ${y[i]}`);
    }
    disposeModel(a);
    disposeModel(b);
    assert.equal(tf.memory().numTensors, live, 'the replaced head and table leave no tensors behind');
  });
}

test('a bf16 host table stays bf16: added rows are the mean rounded to bf16', () => {
  const b = loadModel(path.join(dir, 'bf16'), { hostEmbedding: true });
  const old = b.host!.get('model.embed_tokens.weight')!;
  const oldF32 = halfToF32(old.data as Uint16Array, 'BF16');
  resizeTokenEmbeddings(b, NEW_V);
  const t = b.host!.get('model.embed_tokens.weight')!;
  assert.equal(t.dtype, 'BF16');
  assert.ok(t.data instanceof Uint16Array);
  assert.deepEqual(Array.from(t.data.subarray(0, V * 16)), Array.from(old.data));
  const mean = new Float32Array(16);
  for (let j = 0; j < 16; j++) {
    let s = 0;
    for (let r = 0; r < V; r++) s += oldF32[r * 16 + j]!;
    mean[j] = s / V;
  }
  const want = Array.from(f32ToBf16(mean));
  for (let r = V; r < NEW_V; r++) assert.deepEqual(Array.from(t.data.subarray(r * 16, (r + 1) * 16)), want);
  // Shrinking keeps the first rows.
  resizeTokenEmbeddings(b, 30);
  assert.deepEqual(b.host!.get('model.embed_tokens.weight')!.shape, [30, 16]);
  assert.deepEqual(Array.from(b.host!.get('model.embed_tokens.weight')!.data), Array.from(old.data.subarray(0, 30 * 16)));
  disposeModel(b);
});

test('trained token rows on a host table or frozen head are refused with a config error', () => {
  const b = loadModel(path.join(dir, 'f32-true'), { hostEmbedding: true, frozenHead: true });
  resizeTokenEmbeddings(b, NEW_V);
  const live = tf.memory().numTensors;
  assert.throws(
    () => addLora(b, { r: 2, alpha: 4, dropout: 0, targets: ['q_proj'], trainTokenIds: [V] }, 1),
    (e: unknown) => e instanceof ChatsftError && e.code === 'CONFIG_INVALID' && /train_embeddings/.test(e.message + (e.where ?? '')),
  );
  assert.equal(tf.memory().numTensors, live, 'nothing allocated before the refusal');
  disposeModel(b);
});
