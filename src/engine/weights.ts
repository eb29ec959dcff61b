/**
 * Weight access for the forward pass, wherever the weight lives: a tfjs
 * variable in the wasm heap, or a frozen matrix in host memory (bf16/f16/f32
 * as stored) that `withLayer` uploads for one layer's work and frees after.
 * The wasm heap is 32-bit (4 GiB) and never shrinks, so a 1.5 B model
 * (6 GB of f32) can only run with most of its layers outside it.
 */
import { tf } from './backend.js';
import { ChatsftError } from '../errors.js';
import { f32ToBf16, halfToF32 } from '../hf/safetensors.js';
import { f32ToF16 } from '../util/f16.js';
import type { HostTensor, LlamaModel } from './types.js';

/** A parameter (variable) or an uploaded host matrix as [in, out]. */
export function param(model: LlamaModel, name: string): tf.Tensor {
  const v = model.params.get(name) ?? model.resident?.get(name)?.w;
  if (!v) {
    const where = model.host?.has(name) ? ' (it is in host memory: run inside withLayer)' : '';
    throw new ChatsftError('ENGINE_ERROR', `weight '${name}' is not loaded${where}`);
  }
  return v;
}

/** [out, in] of an uploaded host matrix (its stored layout, so the backward needs no transpose), else null. */
export function paramT(model: LlamaModel, name: string): tf.Tensor2D | null {
  return model.resident?.get(name)?.wT ?? null;
}

/** Host values as f32. */
export function hostF32(t: HostTensor): Float32Array {
  return t.data instanceof Float32Array ? t.data : halfToF32(t.data, t.dtype as 'F16' | 'BF16');
}

/** `count` rows of a host [rows, cols] tensor from row `start`, as f32. */
export function hostRows(t: HostTensor, start: number, count: number): Float32Array {
  const cols = t.shape[1]!;
  const part = t.data.subarray(start * cols, (start + count) * cols);
  return part instanceof Float32Array ? part : halfToF32(part, t.dtype as 'F16' | 'BF16');
}

/**
 * A host [rows, cols] table cut or grown to `rows` rows, in its stored dtype:
 * new rows are the mean of the old ones (summed in f64 over chunks, so a
 * bf16 table is never widened to f32 as a whole), rounded to the dtype.
 */
export function resizeHostRows(t: HostTensor, rows: number): HostTensor {
  const [old, cols] = t.shape as [number, number];
  const keep = Math.min(old, rows);
  const data = t.data instanceof Float32Array ? new Float32Array(rows * cols) : new Uint16Array(rows * cols);
  data.set(t.data.subarray(0, keep * cols));
  if (rows > old) {
    const sum = new Float64Array(cols);
    const chunk = 1024;
    for (let r = 0; r < old; r += chunk) {
      const n = Math.min(chunk, old - r);
      const part = hostRows(t, r, n);
      for (let i = 0; i < n; i++) for (let j = 0; j < cols; j++) sum[j]! += part[i * cols + j]!;
    }
    const mean = Float32Array.from(sum, (v) => v / old);
    const row = t.dtype === 'BF16' ? f32ToBf16(mean) : t.dtype === 'F16' ? f32ToF16(mean) : mean;
    for (let r = old; r < rows; r++) data.set(row, r * cols);
  }
  return { dtype: t.dtype, shape: [rows, cols], data };
}

function layerOf(name: string): number {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** Host tensor names per layer, built once. */
const byLayer = new WeakMap<Map<string, HostTensor>, Map<number, string[]>>();
function hostNames(model: LlamaModel, l: number): string[] {
  const host = model.host;
  if (!host || host.size === 0) return [];
  let m = byLayer.get(host);
  if (!m) {
    m = new Map();
    for (const n of host.keys()) {
      const k = layerOf(n);
      m.set(k, [...(m.get(k) ?? []), n]);
    }
    byLayer.set(host, m);
  }
  return m.get(l) ?? [];
}

/** Layers whose weights live in host memory. */
export function hostLayerCount(model: LlamaModel): number {
  let n = 0;
  for (let l = 0; l < model.config.numHiddenLayers; l++) if (hostNames(model, l).length > 0) n++;
  return n;
}

/**
 * Run `f` with layer `l`'s host matrices uploaded (f32, both layouts), then
 * free them. Layers in the heap, or already uploaded, cost nothing.
 */
export function withLayer<T>(model: LlamaModel, l: number, f: () => T): T {
  const names = hostNames(model, l).filter((n) => !model.resident?.has(n));
  if (names.length === 0) return f();
  model.resident ??= new Map();
  for (const n of names) {
    const t = model.host!.get(n)!;
    const [out, inp] = t.shape as [number, number];
    const wT = tf.tensor2d(hostF32(t), [out, inp]);
    const w = tf.transpose(wT) as tf.Tensor2D;
    tf.keep(wT);
    tf.keep(w);
    model.resident.set(n, { w, wT });
  }
  try {
    return f();
  } finally {
    for (const n of names) {
      const r = model.resident.get(n)!;
      r.w.dispose();
      r.wT.dispose();
      model.resident.delete(n);
    }
  }
}

/**
 * y [B, out] = x [B, in] @ Wᵀ for a host matrix W [out, in] (bf16/f16/f32 as
 * stored), in JS: decoding one token reads each weight once, so uploading and
 * re-packing a layer into the heap per token would cost several times more.
 */
export function hostMatVec(t: HostTensor, x: Float32Array, B: number): Float32Array {
  const [out, inp] = t.shape as [number, number];
  const y = new Float32Array(B * out);
  const row = new Float32Array(inp);
  const words = t.data instanceof Uint16Array ? t.data : null;
  for (let o = 0; o < out; o++) {
    let w: Float32Array;
    if (words) w = halfToF32(words.subarray(o * inp, (o + 1) * inp), t.dtype as 'F16' | 'BF16', row);
    else w = (t.data as Float32Array).subarray(o * inp, (o + 1) * inp);
    for (let b = 0; b < B; b++) {
      // Four partial sums: shorter dependency chains for V8's scalar code.
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      const xo = b * inp;
      let i = 0;
      for (; i + 3 < inp; i += 4) {
        a0 += w[i]! * x[xo + i]!;
        a1 += w[i + 1]! * x[xo + i + 1]!;
        a2 += w[i + 2]! * x[xo + i + 2]!;
        a3 += w[i + 3]! * x[xo + i + 3]!;
      }
      for (; i < inp; i++) a0 += w[i]! * x[xo + i]!;
      y[b * out + o] = a0 + a1 + a2 + a3;
    }
  }
  return y;
}
