/**
 * Weight access for the forward pass, wherever the weight lives: a tfjs
 * variable in the wasm heap, or a frozen matrix in host memory (bf16/f16/f32
 * as stored) that `withLayer` uploads for one layer's work and frees after.
 * The wasm heap is 32-bit (4 GiB) and never shrinks, so a 1.5 B model
 * (6 GB of f32) can only run with most of its layers outside it.
 */
import { tf } from './backend.js';
import { ChatsftError } from '../errors.js';
import { halfToF32 } from '../model/safetensors.js';
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
