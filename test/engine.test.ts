/**
 * Engine equivalences and invariants: gradient accumulation, packing and
 * padding side do not change the loss or gradients; training lowers the
 * loss; LoRA merge is exact; KV-cache decoding equals the full forward; no
 * tensors leak across steps.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { collate } from '../src/batch/collate.js';
import type { Batch, Row } from '../src/batch/types.js';
import { initEngine, tf } from '../src/engine/backend.js';
import { makeLlamaConfig } from '../src/hf/config.js';
import { evalLoss, logits } from '../src/engine/forward.js';
import { createKvCache, disposeKvCache, forwardWithCache } from '../src/engine/infer.js';
import { addLora, mergedTensors, trainableVariables } from '../src/engine/lora.js';
import { createModel, disposeModel, modelFromTensors, resizeTokenEmbeddings } from '../src/engine/model.js';
import { createAdamW, disposeAdamW, ADAMW_DEFAULTS, lrAt } from '../src/engine/optim.js';
import { gatherRows } from '../src/engine/ops.js';
import { Rng } from '../src/engine/rng.js';
import { accumulateGradients, trainStep } from '../src/engine/step.js';

before(async () => {
  await initEngine();
});

const cfg = () =>
  makeLlamaConfig({ vocabSize: 61, hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2 });

function rows(seed: number, n: number, vocab: number): Row[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const len = 3 + Math.floor(rng.next() * 9);
    const inputIds = Array.from({ length: len }, () => Math.floor(rng.next() * vocab));
    return { inputIds, labels: inputIds.map((id, i) => (i >= 1 && rng.next() < 0.6 ? id : -100)) };
  });
}

function pack(rs: Row[]): Row {
  return {
    inputIds: rs.flatMap((r) => r.inputIds),
    labels: rs.flatMap((r) => r.labels),
    positionIds: rs.flatMap((r) => r.inputIds.map((_, i) => i)),
    seqLengths: rs.map((r) => r.inputIds.length),
  };
}

const right = (rs: Row[]): Batch => collate(rs, { padId: 0, paddingSide: 'right' });

function gradArrays(g: Map<string, tf.Tensor>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of g) {
    out.set(k, t.dataSync() as Float32Array);
    t.dispose();
  }
  return out;
}

function assertClose(a: Map<string, Float32Array>, b: Map<string, Float32Array>, tol: number, what: string): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, x] of a) {
    const y = b.get(k)!;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += y[i]! ** 2;
    }
    assert.ok(Math.sqrt(num) <= tol * Math.sqrt(den) + 1e-9, `${what}: ${k} relative gradient difference ${Math.sqrt(num / (den || 1))}`);
  }
}

test('batch 8 × accum 1 equals batch 1 × accum 8 (loss and gradients)', () => {
  const model = createModel(cfg(), 1);
  const rs = rows(2, 8, 61);
  const a = accumulateGradients(model, [right(rs)]);
  const b = accumulateGradients(
    model,
    rs.map((r) => right([r])),
  );
  assert.equal(a.tokens, b.tokens);
  assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * a.loss, `loss ${a.loss} vs ${b.loss}`);
  assertClose(gradArrays(a.grads), gradArrays(b.grads), 1e-4, 'accumulation');
  disposeModel(model);
});

test('a packed batch equals the padded batch; left padding equals right padding', () => {
  const model = createModel(cfg(), 4);
  const rs = rows(5, 6, 61);
  const padded = accumulateGradients(model, [right(rs)]);
  const packed = accumulateGradients(model, [right([pack(rs.slice(0, 3)), pack(rs.slice(3))])]);
  const left = accumulateGradients(model, [collate(rs, { padId: 0, paddingSide: 'left' })]);
  assert.equal(packed.tokens, padded.tokens);
  assert.ok(Math.abs(packed.loss - padded.loss) < 1e-5 * padded.loss, `packed ${packed.loss} vs padded ${padded.loss}`);
  assert.ok(Math.abs(left.loss - padded.loss) < 1e-5 * padded.loss, `left ${left.loss} vs right ${padded.loss}`);
  const ref = gradArrays(padded.grads);
  assertClose(gradArrays(packed.grads), ref, 1e-4, 'packing');
  assertClose(gradArrays(left.grads), ref, 1e-4, 'left padding');
  disposeModel(model);
});

test('embedding gradient sums repeated token ids (ScatterNd path)', () => {
  const table = tf.tensor2d([
    [1, 2],
    [3, 4],
    [5, 6],
  ]);
  const g = tf.grad((t: tf.Tensor) =>
    tf.sum(
      tf.mul(
        gatherRows(t as tf.Tensor2D, tf.tensor1d([2, 0, 2, 2], 'int32')),
        tf.tensor2d([
          [1, 1],
          [2, 2],
          [3, 3],
          [4, 4],
        ]),
      ),
    ),
  )(table);
  assert.deepEqual(Array.from(g.dataSync()), [2, 2, 0, 0, 8, 8]);
  tf.dispose([table, g]);
});

test('training lowers the loss, and leaks no tensors between steps', () => {
  const model = createModel(cfg(), 9);
  const rs = rows(10, 8, 61);
  const batch = right(rs);
  const opt = createAdamW(new Map(model.params));
  const hp = { ...ADAMW_DEFAULTS, weightDecay: 0.01, maxGradNorm: 1 };
  const first = evalLoss(model, batch);
  const counts: number[] = [];
  for (let s = 0; s < 30; s++) {
    trainStep(model, [batch], opt, lrAt({ kind: 'cosine', lr: 1e-2, warmupSteps: 3, totalSteps: 30 }, s), hp);
    counts.push(tf.memory().numTensors);
  }
  const last = evalLoss(model, batch);
  assert.ok(last.sum / last.count < 0.5 * (first.sum / first.count), `loss ${first.sum / first.count} → ${last.sum / last.count}`);
  assert.equal(counts[counts.length - 1], counts[counts.length - 2], `live tensors per step: ${counts.join(',')}`);
  assert.equal(counts[5], counts[29]);
  disposeAdamW(opt);
  disposeModel(model);
});

test('LoRA: zero-init adapter leaves the output unchanged; merged weights equal the unmerged forward', () => {
  const model = createModel(cfg(), 11);
  const batch = right(rows(12, 4, 61));
  const base = evalLoss(model, batch);
  addLora(
    model,
    { r: 4, alpha: 8, dropout: 0.1, targets: ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj'], trainTokenIds: [3, 5] },
    13,
  );
  assert.ok(Math.abs(evalLoss(model, batch).sum - base.sum) < 1e-5 * base.sum);
  const opt = createAdamW(trainableVariables(model));
  const before = Array.from(model.params.get('model.layers.0.self_attn.q_proj.weight')!.dataSync());
  const rng = new Rng(1);
  for (let s = 0; s < 5; s++) trainStep(model, [batch], opt, 1e-2, { ...ADAMW_DEFAULTS, maxGradNorm: 0 }, rng);
  assert.deepEqual(Array.from(model.params.get('model.layers.0.self_attn.q_proj.weight')!.dataSync()), before, 'base weights frozen');
  const adapted = logits(model, batch);
  const merged = modelFromTensors(model.config, mergedTensors(model), 'merged');
  const m = logits(merged, batch);
  let maxDiff = 0;
  let moved = 0;
  const plain = createModel(cfg(), 11);
  const p0 = logits(plain, batch);
  for (let i = 0; i < m.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(m[i]! - adapted[i]!));
    moved = Math.max(moved, Math.abs(p0[i]! - adapted[i]!));
  }
  assert.ok(moved > 1e-3, 'training the adapter changed the output');
  // The trained token rows of the untied head moved; the others did not.
  const headBase = plain.params.get('lm_head.weight')!.arraySync() as number[][]; // [d, V]
  const headMerged = mergedTensors(model).get('lm_head.weight')!.data; // HF [V, d]
  const rowMoved = (row: number) => Math.max(...headBase.map((col, j) => Math.abs(col[row]! - headMerged[row * 32 + j]!)));
  assert.ok(rowMoved(3) > 1e-4 && rowMoved(5) > 1e-4, 'lm_head rows of the trained tokens are trained');
  assert.equal(rowMoved(4), 0, 'other lm_head rows are frozen');
  assert.ok(maxDiff < 1e-4, `merged vs unmerged logits differ by ${maxDiff}`);
  disposeAdamW(opt);
  [model, merged, plain].forEach(disposeModel);
});

test('KV-cache prefill + decode logits equal the full forward (left-padded rows)', () => {
  const model = createModel(
    makeLlamaConfig({
      modelType: 'qwen3',
      vocabSize: 53,
      hiddenSize: 32,
      intermediateSize: 40,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 1,
      headDim: 8,
    }),
    21,
  );
  const seqs = [
    [5, 9, 2, 7, 1, 3, 8],
    [4, 4, 6, 10, 12, 1, 2],
  ];
  const promptLens = [4, 2];
  const full = seqs.map((s) => logits(model, right([{ inputIds: s, labels: s.map(() => -100) }])));
  const V = 53;
  // Left-pad the prompts to a common length, then decode the rest one token at a time.
  const P = Math.max(...promptLens);
  const live = tf.memory().numTensors;
  const cache = createKvCache(model, 2, 16);
  const pre = seqs.map((s, b) => [...new Array<number>(P - promptLens[b]!).fill(0), ...s.slice(0, promptLens[b]!)]);
  const mask = promptLens.map((n) => [...new Array<number>(P - n).fill(0), ...new Array<number>(n).fill(1)]);
  const pos = promptLens.map((n) => Array.from({ length: P }, (_, i) => Math.max(0, i - (P - n))));
  let out = forwardWithCache(model, pre, cache, pos, mask);
  const steps = Math.min(...seqs.map((s, b) => s.length - promptLens[b]!));
  for (let k = 0; k <= steps; k++) {
    for (let b = 0; b < 2; b++) {
      const t = promptLens[b]! - 1 + k;
      for (let v = 0; v < V; v++) assert.ok(Math.abs(out[b * V + v]! - full[b]![t * V + v]!) < 1e-4, `row ${b} position ${t}`);
    }
    if (k === steps) break;
    out = forwardWithCache(
      model,
      seqs.map((s, b) => [s[promptLens[b]! + k]!]),
      cache,
      promptLens.map((n) => [n + k]),
    );
  }
  disposeKvCache(cache);
  assert.equal(tf.memory().numTensors, live, 'no tensors leak from cached decoding');
  disposeModel(model);
});

test('resizing the vocabulary fills new rows with the mean of the old ones', () => {
  const model = createModel(cfg(), 3);
  const before = model.params.get('model.embed_tokens.weight')!.arraySync() as number[][];
  resizeTokenEmbeddings(model, 64);
  const after = model.params.get('model.embed_tokens.weight')!.arraySync() as number[][];
  assert.equal(after.length, 64);
  const mean0 = before.reduce((s, r) => s + r[0]!, 0) / before.length;
  assert.ok(Math.abs(after[63]![0]! - mean0) < 1e-6);
  assert.deepEqual(model.params.get('lm_head.weight')!.shape, [32, 64]);
  assert.ok(Number.isFinite(evalLoss(model, right(rows(1, 2, 64))).sum));
  disposeModel(model);
});

test('replacement wasm Slice / Unpack / SplitV kernels match plain array slicing', () => {
  const x = tf.tensor4d(
    Float32Array.from({ length: 3 * 4 * 5 * 2 }, (_, i) => i),
    [3, 4, 5, 2],
  );
  const a = x.arraySync();
  const cut = (b: number[], s: number[]) =>
    a
      .slice(b[0], b[0]! + s[0]!)
      .map((p) => p.slice(b[1], b[1]! + s[1]!).map((q) => q.slice(b[2], b[2]! + s[2]!).map((r) => r.slice(b[3], b[3]! + s[3]!))));
  assert.deepEqual(tf.slice(x, [1, 0, 2, 1], [2, 4, 3, 1]).arraySync(), cut([1, 0, 2, 1], [2, 4, 3, 1]));
  assert.deepEqual(tf.slice(x, [2], [-1]).arraySync(), cut([2, 0, 0, 0], [1, 4, 5, 2]));
  assert.deepEqual(tf.slice(x, 1, 1).arraySync(), cut([1, 0, 0, 0], [1, 4, 5, 2]));
  const parts = tf.unstack(x, 1);
  parts.forEach((p, i) =>
    assert.deepEqual(
      p.arraySync(),
      a.map((q) => q[i]),
    ),
  );
  const [s1, s2] = tf.split(x, [3, 2], 2);
  assert.deepEqual(s1!.arraySync(), cut([0, 0, 0, 0], [3, 4, 3, 2]));
  assert.deepEqual(s2!.arraySync(), cut([0, 0, 3, 0], [3, 4, 2, 2]));
  tf.dispose([x, ...parts, s1!, s2!]);
});
