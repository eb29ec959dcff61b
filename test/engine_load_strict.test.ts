/**
 * Strict weight loading (issue 10, class 10) and the memory plan's refusal
 * of models that cannot fit (class 6): every case is a clear ChatsftError
 * before anything large is allocated.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatsftError } from '../src/errors.js';
import { initEngine } from '../src/engine/backend.js';
import { makeLlamaConfig, toHfConfig } from '../src/hf/config.js';
import { countParameters, createModel, disposeModel, expectedShapes, loadModel, saveModel } from '../src/engine/model.js';
import { assertPlanFits, planMemory, parameterCount } from '../src/engine/plan.js';
import { openSafetensors, openWeights, writeSafetensors } from '../src/hf/safetensors.js';
import { makeCheckpoint } from '../bench/checkpoints.js';

let root = '';
const config = makeLlamaConfig({
  vocabSize: 40,
  hiddenSize: 16,
  intermediateSize: 24,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
});

before(async () => {
  await initEngine();
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-strict-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A model folder from `config`, with `edit` applied to its HF tensors first. */
function folder(name: string, edit: (t: Map<string, { shape: number[]; data: Float32Array }>) => void = () => {}, cfg = config): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [n, shape] of expectedShapes(cfg)) t.set(n, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.01) });
  edit(t);
  writeSafetensors(path.join(dir, 'model.safetensors'), t, { format: 'pt' });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(cfg)));
  return dir;
}

const refused = (dir: string, re: RegExp, opts = {}) =>
  assert.throws(
    () => loadModel(dir, opts),
    (e: unknown) => e instanceof ChatsftError && e.code === 'MODEL_INVALID' && re.test(e.message),
    `expected ${re}`,
  );

test('weights with more layers than config.json are refused, naming both counts', () => {
  const more = makeLlamaConfig({
    vocabSize: 40,
    hiddenSize: 16,
    intermediateSize: 24,
    numHiddenLayers: 3,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
  });
  const dir = folder('layers', () => {}, more);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(config)));
  refused(dir, /weights have 3 decoder layers but config\.json says num_hidden_layers 2/);
});

test('unused tensors are refused unless allowExtraTensors; tied lm_head copies are harmless', () => {
  const dir = folder('extra', (t) => t.set('model.vision_tower.weight', { shape: [2], data: new Float32Array(2) }));
  refused(dir, /tensor\(s\) the config does not use: 'model\.vision_tower\.weight' \(pass --allow-extra-tensors/);
  const m = loadModel(dir, { allowExtraTensors: true });
  assert.equal(countParameters(m), parameterCount(config));
  disposeModel(m);
});

test('missing, mis-shaped and integer-typed weights are refused', () => {
  refused(
    folder('missing', (t) => t.delete('model.norm.weight')),
    /missing tensor 'model\.norm\.weight'/,
  );
  refused(
    folder('shape', (t) => t.set('model.norm.weight', { shape: [8], data: new Float32Array(8) })),
    /'model\.norm\.weight' has shape \[8\], config needs \[16\]/,
  );
  // An I8 tensor: rewrite one tensor's dtype in the header (same byte count: 4 × I8 for one F32).
  const dir = folder('int8', (t) => t.set('model.norm.weight', { shape: [4], data: new Float32Array(4) }));
  const file = path.join(dir, 'model.safetensors');
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = buf
    .subarray(8, 8 + n)
    .toString('utf8')
    .replace('"model.norm.weight":{"dtype":"F32","shape":[4]', '"model.norm.weight":{"dtype":"I8","shape":[16]');
  fs.writeFileSync(file, Buffer.concat([buf.subarray(0, 8), Buffer.from(header), buf.subarray(8 + n)]));
  refused(dir, /'model\.norm\.weight' is I8: weights must be F32, F16 or BF16/);
});

test('a header with a duplicate tensor name is corrupt (JSON.parse would keep the last)', () => {
  const file = path.join(root, 'dup.safetensors');
  const header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]));
  assert.throws(
    () => openSafetensors(file),
    (e: unknown) => e instanceof ChatsftError && e.code === 'FILE_CORRUPT' && /'a' appears twice/.test(e.message),
  );
});

test('generated sharded bf16 checkpoint: index and shards agree, load equals the stored values', () => {
  const dir = path.join(root, 'tiny');
  const info = makeCheckpoint('tiny-llama', dir, { shardBytes: 200_000 });
  assert.ok(info.shards >= 2, `${info.shards} shards`);
  const index = openWeights(dir);
  assert.equal(index.files.length, info.shards);
  const m = loadModel(dir);
  assert.equal(countParameters(m), info.parameters);
  disposeModel(m);
  // An index that names the wrong shard for a tensor is refused.
  const idxFile = path.join(dir, 'model.safetensors.index.json');
  const idx = JSON.parse(fs.readFileSync(idxFile, 'utf8')) as { weight_map: Record<string, string> };
  const [first, second] = [...new Set(Object.values(idx.weight_map))];
  idx.weight_map['model.norm.weight'] = idx.weight_map['model.norm.weight'] === first ? second! : first!;
  fs.writeFileSync(idxFile, JSON.stringify(idx));
  assert.throws(
    () => openWeights(dir),
    (e: unknown) => e instanceof ChatsftError && e.code === 'FILE_CORRUPT' && /model\.norm\.weight/.test(e.message),
  );
});

test('a 10^13-parameter config is refused by the memory plan, naming the limit, before allocating', () => {
  const huge = makeLlamaConfig({
    vocabSize: 32000,
    hiddenSize: 65536,
    intermediateSize: 262144,
    numHiddenLayers: 180,
    numAttentionHeads: 512,
    numKeyValueHeads: 64,
  });
  assert.ok(parameterCount(huge) > 1e13);
  const inp = { config: huge, mode: 'full' as const, batchSize: 8, seqLen: 512 };
  const plan = planMemory(inp);
  assert.equal(plan.fits, false);
  assert.throws(
    () => assertPlanFits(plan, inp, 'model_config'),
    (e: unknown) => e instanceof ChatsftError && e.code === 'RESOURCE_LIMIT' && /of RAM/.test(e.message) && /machine has/.test(e.message),
  );
  // The plan's parameter count is the model's.
  const m = createModel(config, 1);
  assert.equal(parameterCount(config), countParameters(m));
  disposeModel(m);
});

test('a plan that does not fit the wasm heap names the settings that would', () => {
  // A 0.5 B-like shape fully fine-tuned at batch 8 × 1024: LoRA or a smaller batch fits.
  const c = makeLlamaConfig({
    modelType: 'qwen2',
    vocabSize: 151936,
    hiddenSize: 896,
    intermediateSize: 4864,
    numHiddenLayers: 24,
    numAttentionHeads: 14,
    numKeyValueHeads: 2,
    tieWordEmbeddings: true,
  });
  const inp = { config: c, mode: 'full' as const, batchSize: 8, seqLen: 1024, hostMemory: 64 * 2 ** 30 };
  const plan = planMemory(inp);
  assert.equal(plan.fits, false);
  assert.throws(
    () => assertPlanFits(plan, inp),
    (e: unknown) => e instanceof ChatsftError && e.code === 'RESOURCE_LIMIT' && /wasm heap/.test(e.message) && /lora/.test(e.message),
  );
  const lora = planMemory({
    ...inp,
    mode: 'lora',
    lora: { r: 16, targets: ['q_proj', 'v_proj'], trainRows: 0 },
    batchSize: 1,
    seqLen: 256,
  });
  assert.equal(lora.fits, true);
});

test('saveModel streams and round-trips bf16', () => {
  const m = createModel(config, 2);
  const dir = path.join(root, 'bf16');
  saveModel(m, dir, undefined, { dtype: 'BF16' });
  const back = loadModel(dir);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))['torch_dtype'], 'bfloat16');
  const a = m.params.get('model.layers.0.mlp.up_proj.weight')!.dataSync();
  const b = back.params.get('model.layers.0.mlp.up_proj.weight')!.dataSync();
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= Math.abs(a[i]!) / 128 + 1e-12);
  disposeModel(m);
  disposeModel(back);
});
