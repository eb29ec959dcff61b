/**
 * The GGUF serialiser on its own, read back with an independent parser
 * (@huggingface/gguf), plus the f16 conversion and the RoPE row permutation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gguf, GGUFValueType } from '@huggingface/gguf';
import { GGML_TYPE_F16, GGML_TYPE_F32, GgufType, kv, writeGguf } from '../src/export/gguf-file.js';
import { f16BitsToF32, f32BitsToF16, f32ToF16 } from '../src/util/f16.js';
import { permuteRope, ggufTensorName } from '../src/export/gguf-tensors.js';
import { isChatsftError } from '../src/errors.js';

test('f32 → f16 matches IEEE half rounding (values checked against numpy float16)', () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [65520, 0x7c00],
    [1e6, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000],
    [3 * 2 ** -26, 0x0001],
    [2 ** -14, 0x0400],
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00], // halfway, round to even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // halfway, round to even (up)
    [3.14159, 0x4248],
  ];
  for (const [x, h] of cases) assert.equal(f32BitsToF16(x), h, `f16(${x})`);
  assert.ok(Number.isNaN(f16BitsToF32(f32BitsToF16(NaN))));
  // Values representable in f16 come back exactly.
  for (const x of [1, -2, 0.5, 65504, 2 ** -24, 0.0999755859375, -3.140625]) assert.equal(f16BitsToF32(f32BitsToF16(x)), x);
  assert.equal(f16BitsToF32(0x2e66), 0.0999755859375);
});

test('metadata of every type and tensor layout round-trip through an independent reader', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-ggufw-'));
  try {
    const file = path.join(dir, 'x.gguf');
    const w = Float32Array.from({ length: 6 }, (_, i) => i - 2.5);
    const b = Float32Array.from([1, 2, 3]);
    writeGguf(
      file,
      [
        kv.str('general.architecture', 'llama'),
        kv.u32('general.alignment', 64),
        kv.u32('a.u32', 4_000_000_000),
        kv.i32('a.i32', -7),
        kv.f32('a.f32', 0.25),
        kv.bool('a.bool', true),
        { key: 'a.u64', type: GgufType.UINT64, value: 2n ** 40n },
        { key: 'a.u8', type: GgufType.UINT8, value: 200 },
        kv.strs('a.strs', ['', 'ĠHello', '中文 🙂', '<|im_end|>']),
        kv.i32s('a.i32s', [1, -2, 3]),
        kv.f32s('a.f32s', [0.5, -1.5]),
      ],
      [
        { name: 'm.weight', shape: [2, 3], type: GGML_TYPE_F16, data: w },
        { name: 'b.bias', shape: [3], type: GGML_TYPE_F32, data: () => b },
      ],
    );
    const p = await gguf(file, { allowLocalFile: true, typedMetadata: true });
    const m = p.metadata as unknown as Record<string, unknown>;
    assert.equal(m['version'], 3);
    assert.equal(m['a.u32'], 4_000_000_000);
    assert.equal(m['a.i32'], -7);
    assert.equal(m['a.f32'], 0.25);
    assert.equal(m['a.bool'], true);
    assert.equal(m['a.u64'], 2n ** 40n);
    assert.equal(m['a.u8'], 200);
    assert.deepEqual(m['a.strs'], ['', 'ĠHello', '中文 🙂', '<|im_end|>']);
    assert.deepEqual(m['a.i32s'], [1, -2, 3]);
    assert.deepEqual(m['a.f32s'], [0.5, -1.5]);
    assert.equal(p.typedMetadata['a.i32s']?.subType, GGUFValueType.INT32);
    const [mw, bb] = p.tensorInfos;
    assert.deepEqual([mw!.name, mw!.shape, mw!.dtype, mw!.offset], ['m.weight', [3n, 2n], 1, 0n]);
    assert.deepEqual([bb!.name, bb!.shape, bb!.dtype, bb!.offset], ['b.bias', [3n], 0, 64n]);
    assert.equal(Number(p.tensorDataOffset) % 64, 0);
    const bytes = fs.readFileSync(file);
    const base = Number(p.tensorDataOffset);
    assert.deepEqual(new Uint16Array(bytes.buffer.slice(bytes.byteOffset + base, bytes.byteOffset + base + 12)), f32ToF16(w));
    assert.deepEqual(new Float32Array(bytes.buffer.slice(bytes.byteOffset + base + 64, bytes.byteOffset + base + 76)), b);
    assert.equal(bytes.length, base + 128);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writer refuses duplicates and wrong sizes without leaving a file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-ggufw-'));
  try {
    const file = path.join(dir, 'y.gguf');
    assert.throws(
      () => writeGguf(file, [kv.u32('k', 1), kv.u32('k', 2)], []),
      (e) => isChatsftError(e) && e.code === 'EXPORT_ERROR',
    );
    assert.throws(() => writeGguf(file, [], [{ name: 't', shape: [2, 2], type: GGML_TYPE_F32, data: new Float32Array(3) }]), /3 values/);
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('RoPE permutation interleaves the two halves of each head', () => {
  // 2 heads × head_dim 4, 1 column: rows h*4 + [0,1,2,3] = [x0,x1,y0,y1] → [x0,y0,x1,y1].
  const rows = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
  assert.deepEqual(Array.from(permuteRope(rows, 8, 2)), [0, 2, 1, 3, 10, 12, 11, 13]);
  // Columns move with their row.
  const m = Float32Array.from([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
  assert.deepEqual(Array.from(permuteRope(m, 4, 1)), [0, 0.5, 2, 2.5, 1, 1.5, 3, 3.5]);
  assert.throws(() => permuteRope(new Float32Array(6), 6, 2), /even/);
});

test('tensor names follow llama.cpp', () => {
  assert.equal(ggufTensorName('model.embed_tokens.weight'), 'token_embd.weight');
  assert.equal(ggufTensorName('model.layers.3.self_attn.o_proj.weight'), 'blk.3.attn_output.weight');
  assert.equal(ggufTensorName('model.layers.0.post_attention_layernorm.weight'), 'blk.0.ffn_norm.weight');
  assert.equal(ggufTensorName('model.layers.0.self_attn.rotary_emb.inv_freq'), null);
  assert.throws(
    () => ggufTensorName('model.layers.0.mlp.experts.0.w1.weight'),
    (e) => isChatsftError(e) && e.code === 'EXPORT_ERROR',
  );
});
