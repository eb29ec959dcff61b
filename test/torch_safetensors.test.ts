/**
 * The worker's pure-Python safetensors (python/chatsft_worker/safetensors_io.py)
 * against the engine's reader/writer: F32 and F16 files written here read
 * back exactly there; BF16 shards + index written there read back here as
 * the round-to-nearest-even bf16 of the values. Then a torch run started
 * from a pretrained bf16 sharded folder whose vocabulary must grow by one
 * row (mean-initialised, as for an added token) equals the embedded run.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigSchema } from '../src/config/schema.js';
import { readSafetensors, readSafetensorsDir, writeSafetensors } from '../src/engine/safetensors.js';
import { Rng } from '../src/engine/rng.js';
import { makeLlamaConfig, toHfConfig } from '../src/hf/config.js';
import { initialTensors } from '../src/engine/index.js';
import { WORKER_PATH } from '../src/torch/python.js';
import { trainFromConfig } from '../src/train/from-config.js';
import { generateDemoData, renderChatml, toJsonl } from '../src/demo/data.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { cleanupTemp, tempRoot } from './helpers/fixtures.js';

const PY = '/usr/bin/python3';
const hasTorch = spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const SKIP = `${PY} cannot import torch (apt-get install python3-torch libopenblas0-pthread): the worker's safetensors not checked`;
after(cleanupTemp);

/** Round-to-nearest-even to bf16, back in f32 (what torch's .to(bfloat16) does). */
function bf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f[0]!;
}

const PY_ROUNDTRIP = `
import json, sys
from chatsft_worker import safetensors_io as st
import torch
src, out = sys.argv[1], sys.argv[2]
f32, _ = st.read_file(src + "/f32.safetensors")
f16, _ = st.read_file(src + "/f16.safetensors")
print(json.dumps({"f32": {k: v.flatten().tolist() for k, v in f32.items()}, "f16": {k: v.float().flatten().tolist() for k, v in f16.items()}, "f16_dtype": str(next(iter(f16.values())).dtype)}))
names = st.write_model(out, {k: v.to(torch.bfloat16) for k, v in f32.items()}, max_shard_bytes=200)
`;

test('worker safetensors: reads F32/F16 written by the engine; its sharded BF16 + index reads back here', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const dir = join(tempRoot(), 'st');
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(9);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of [
    ['a.weight', [7, 13]],
    ['b.bias', [5]],
    ['c.weight', [3, 4, 6]],
    ['d.weight', [11, 9]],
  ] as const) {
    const n = shape.reduce((x, y) => x * y, 1);
    tensors.set(name, { shape: [...shape], data: rng.fillNormal(new Float32Array(n), 3) });
  }
  writeSafetensors(join(dir, 'f32.safetensors'), tensors);
  writeSafetensors(join(dir, 'f16.safetensors'), tensors, undefined, { dtype: 'F16' });
  const out = join(tempRoot(), 'st-bf16');
  mkdirSync(out, { recursive: true });
  const got = JSON.parse(
    execFileSync(PY, ['-c', PY_ROUNDTRIP, dir, out], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: WORKER_PATH } }),
  ) as { f32: Record<string, number[]>; f16: Record<string, number[]>; f16_dtype: string };
  const f16Here = readSafetensors(join(dir, 'f16.safetensors')).tensors;
  assert.equal(got.f16_dtype, 'torch.float16');
  for (const [name, t0] of tensors) {
    assert.deepEqual(got.f32[name], Array.from(t0.data), `${name} F32`);
    assert.deepEqual(got.f16[name], Array.from(f16Here.get(name)!.data), `${name} F16`);
  }
  const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  assert.deepEqual(Object.keys(index.weight_map).sort(), [...tensors.keys()].sort());
  assert.ok(new Set(Object.values(index.weight_map)).size >= 2, 'several shards');
  assert.ok(!existsSync(join(out, 'model.safetensors')));
  const back = readSafetensorsDir(out);
  for (const [name, t0] of tensors) {
    const b = back.get(name)!;
    assert.equal(b.dtype, 'BF16');
    assert.deepEqual(b.shape, t0.shape);
    assert.deepEqual(Array.from(b.data), Array.from(t0.data, bf16), `${name} BF16`);
  }
});

test('torch run from a pretrained bf16 sharded folder with a vocabulary to grow equals the embedded run', async (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const d = generateDemoData({ seed: 4, train: 32, heldout: 2, task: 'A' });
  const model = join(tempRoot(), 'pretrained');
  const info = await writeDemoModelFolder(model, d.train.map(renderChatml), { vocabSize: 300 });
  // One row short of the tokenizer: both engines must grow it (mean of the rows), as for an added token.
  const config = makeLlamaConfig({
    vocabSize: info.vocabSize - 1,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
  });
  writeFileSync(join(model, 'config.json'), JSON.stringify({ ...toHfConfig(config), torch_dtype: 'bfloat16' }));
  const f32 = join(tempRoot(), 'pretrained-f32');
  mkdirSync(f32, { recursive: true });
  writeSafetensors(join(f32, 'init.safetensors'), initialTensors(config, 21));
  execFileSync(
    PY,
    [
      '-c',
      'import sys, torch\nfrom chatsft_worker import safetensors_io as st\nt, _ = st.read_file(sys.argv[1])\nst.write_model(sys.argv[2], {k: v.to(torch.bfloat16) for k, v in t.items()}, max_shard_bytes=40000)',
      join(f32, 'init.safetensors'),
      model,
    ],
    { env: { ...process.env, PYTHONPATH: WORKER_PATH } },
  );
  assert.ok(existsSync(join(model, 'model.safetensors.index.json')));
  const data = join(tempRoot(), 'pt-train.jsonl');
  writeFileSync(data, toJsonl(d.train));
  const cfg = (out: string) =>
    ConfigSchema.parse({ model, data: { train: data }, output_dir: out, max_steps: 3, batch_size: 8, lr: 3e-3, seed: 1 });
  const quiet = { quiet: true, onLog: () => {} };
  const e = await trainFromConfig(cfg(join(tempRoot(), 'pt-emb')), quiet);
  const tr = await trainFromConfig(cfg(join(tempRoot(), 'pt-torch')), { ...quiet, engine: 'torch' });
  tr.losses.forEach((x, i) => assert.ok(Math.abs(x - e.losses[i]!) < 1e-4, `step ${i + 1}: ${x} vs ${e.losses[i]}`));
  // The torch engine keeps the checkpoint's dtype; the vocabulary grew by one row.
  const saved = readSafetensorsDir(join(tempRoot(), 'pt-torch'));
  const emb = saved.get('model.embed_tokens.weight')!;
  assert.equal(emb.dtype, 'BF16');
  assert.deepEqual(emb.shape, [info.vocabSize, 32]);
  const savedConfig = JSON.parse(readFileSync(join(tempRoot(), 'pt-torch', 'config.json'), 'utf8')) as {
    vocab_size: number;
    torch_dtype: string;
  };
  assert.equal(savedConfig.vocab_size, info.vocabSize);
  assert.equal(savedConfig.torch_dtype, 'bfloat16');
});
