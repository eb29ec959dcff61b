/** Safetensors round trip, dtype decoding, sharded folders and corrupt-header errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatsftError } from '../src/errors.js';
import { readSafetensors, readSafetensorsDir, writeSafetensors } from '../src/engine/safetensors.js';
import { parseLlamaConfig, toHfConfig } from '../src/hf/config.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-st-'));

/** A file with a hand-written header and data section. */
function rawFile(file: string, header: unknown, data: Buffer): void {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, data]));
}

test('write → read round trip keeps names, shapes, values and metadata; header is 8-byte aligned', () => {
  const dir = tmp();
  const f = path.join(dir, 'a.safetensors');
  const tensors = new Map([
    ['z.weight', { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-8, -7]) }],
    ['a.bias', { shape: [3], data: Float32Array.from([0.25, 0.5, 0.75]) }],
    ['s', { shape: [], data: Float32Array.from([42]) }],
  ]);
  writeSafetensors(f, tensors, { format: 'pt' });
  const n = Number(fs.readFileSync(f).readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0);
  const header = JSON.parse(
    fs
      .readFileSync(f)
      .subarray(8, 8 + n)
      .toString(),
  ) as Record<string, { data_offsets: number[] }>;
  assert.deepEqual(header['a.bias']!.data_offsets, [0, 12], 'names sorted, data laid out in name order');
  const back = readSafetensors(f);
  assert.deepEqual(back.metadata, { format: 'pt' });
  for (const [k, t] of tensors) {
    assert.deepEqual(back.tensors.get(k)!.shape, t.shape);
    assert.deepEqual(Array.from(back.tensors.get(k)!.data), Array.from(t.data));
    assert.equal(back.tensors.get(k)!.dtype, 'F32');
  }
  assert.deepEqual(fs.readdirSync(dir), ['a.safetensors'], 'no temp files left');
  fs.rmSync(dir, { recursive: true });
});

test('F16, BF16 and I64 are decoded to f32', () => {
  const dir = tmp();
  const f = path.join(dir, 'h.safetensors');
  const data = Buffer.alloc(2 * 3 + 2 * 2 + 8);
  [0x3c00, 0xc000, 0x3555].forEach((h, i) => data.writeUInt16LE(h, i * 2)); // 1, -2, ≈0.33325
  [0x3f80, 0xbfc0].forEach((h, i) => data.writeUInt16LE(h, 6 + i * 2)); // bf16 1, -1.5
  data.writeBigInt64LE(-5n, 10);
  rawFile(
    f,
    {
      h: { dtype: 'F16', shape: [3], data_offsets: [0, 6] },
      b: { dtype: 'BF16', shape: [2], data_offsets: [6, 10] },
      i: { dtype: 'I64', shape: [1], data_offsets: [10, 18] },
    },
    data,
  );
  const t = readSafetensors(f).tensors;
  assert.deepEqual(Array.from(t.get('h')!.data).slice(0, 2), [1, -2]);
  assert.ok(Math.abs(t.get('h')!.data[2]! - 0.33325) < 1e-4);
  assert.deepEqual(Array.from(t.get('b')!.data), [1, -1.5]);
  assert.deepEqual(Array.from(t.get('i')!.data), [-5]);
  fs.rmSync(dir, { recursive: true });
});

test('corrupt headers are FILE_CORRUPT errors naming the problem', () => {
  const dir = tmp();
  const f = path.join(dir, 'bad.safetensors');
  const cases: [string, () => void, RegExp][] = [
    ['too short', () => fs.writeFileSync(f, Buffer.alloc(4)), /shorter than/],
    [
      'header length past the end',
      () => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(1000n);
        fs.writeFileSync(f, b);
      },
      /exceeds the file/,
    ],
    [
      'not JSON',
      () => {
        const h = Buffer.from('{nope');
        const l = Buffer.alloc(8);
        l.writeBigUInt64LE(BigInt(h.length));
        fs.writeFileSync(f, Buffer.concat([l, h]));
      },
      /not JSON/,
    ],
    ['unknown dtype', () => rawFile(f, { x: { dtype: 'Q4', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4)), /unsupported dtype/],
    ['out of range', () => rawFile(f, { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, Buffer.alloc(4)), /outside/],
    ['size mismatch', () => rawFile(f, { x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, Buffer.alloc(8)), /needs 12/],
    [
      'overlap',
      () =>
        rawFile(
          f,
          { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
          Buffer.alloc(12),
        ),
      /overlap/,
    ],
    ['bad shape', () => rawFile(f, { x: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, Buffer.alloc(4)), /invalid shape/],
  ];
  for (const [name, make, re] of cases) {
    make();
    assert.throws(
      () => readSafetensors(f),
      (e: unknown) => e instanceof ChatsftError && e.code === 'FILE_CORRUPT' && re.test(e.message) && e.where === f,
      name,
    );
  }
  assert.throws(
    () => readSafetensors(path.join(dir, 'missing.safetensors')),
    (e: unknown) => e instanceof ChatsftError && e.code === 'FILE_MISSING',
  );
  fs.rmSync(dir, { recursive: true });
});

test('sharded folders are read through model.safetensors.index.json', () => {
  const dir = tmp();
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), new Map([['a', { shape: [1], data: Float32Array.from([1]) }]]));
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), new Map([['b', { shape: [1], data: Float32Array.from([2]) }]]));
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }),
  );
  const t = readSafetensorsDir(dir);
  assert.deepEqual([...t.keys()].sort(), ['a', 'b']);
  assert.throws(
    () => readSafetensorsDir(path.join(dir, 'nope')),
    (e: unknown) => e instanceof ChatsftError && e.code === 'FILE_MISSING',
  );
  fs.rmSync(dir, { recursive: true });
});

test('config.json parsing validates and round-trips', () => {
  const raw = {
    model_type: 'qwen2',
    vocab_size: 10,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    rope_theta: 1e6,
    tie_word_embeddings: true,
    custom_key: 'kept',
  };
  const c = parseLlamaConfig(raw);
  assert.equal(c.headDim, 4);
  assert.equal(c.attentionBias, true);
  const back = toHfConfig(c);
  assert.equal(back['custom_key'], 'kept');
  assert.deepEqual(parseLlamaConfig(back), { ...c, raw: back });
  assert.throws(() => parseLlamaConfig({ ...raw, model_type: 'gpt2' }), /model_type/);
  assert.throws(() => parseLlamaConfig({ ...raw, num_key_value_heads: 3 }), /multiple/);
  assert.throws(() => parseLlamaConfig({ ...raw, hidden_size: -1 }), /hidden_size/);
});
