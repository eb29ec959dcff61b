/**
 * Replacement Slice / Unpack / SplitV kernels for tfjs-backend-wasm 4.22.
 * The stock Slice kernel copies its whole input out of the wasm heap
 * (`backend.readSync`) before taking the slice, so unstacking a
 * [128, 64, 32] tensor copied 128 × 1 MiB (≈ 60 ms; 0.4 ms per slice).
 * These read the input through a heap view and copy only the slice.
 */
import * as tf from '@tensorflow/tfjs';

type Dtype = 'float32' | 'int32' | 'bool';
interface Info {
  dataId: object;
  shape: number[];
  dtype: Dtype;
}
/** The parts of BackendWasm these kernels use. */
interface WasmBackend {
  makeOutput(shape: number[], dtype: Dtype): Info;
  typedArrayFromHeap(t: Info): Float32Array | Int32Array | Uint8Array;
}

function strides(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

function sliceImpl(x: Info, begin: number[], size: number[], backend: WasmBackend): Info {
  const rank = x.shape.length;
  const b = [...begin];
  const sz = size.map((v, i) => (v === -1 ? x.shape[i]! - b[i]! : v));
  const out = backend.makeOutput(sz, x.dtype);
  const n = sz.reduce((a, c) => a * c, 1);
  if (n === 0) return out;
  // Views taken after makeOutput: allocating may grow (and detach) the heap.
  const xv = backend.typedArrayFromHeap(x);
  const ov = backend.typedArrayFromHeap(out);
  if (rank === 0) {
    ov.set(xv.subarray(0, 1));
    return out;
  }
  const xs = strides(x.shape);
  // Copy runs of the last axis; iterate the other axes as an odometer.
  const last = sz[rank - 1]!;
  const idx = new Array<number>(rank - 1).fill(0);
  let o = 0;
  for (;;) {
    let off = b[rank - 1]!;
    for (let d = 0; d < rank - 1; d++) off += (b[d]! + idx[d]!) * xs[d]!;
    ov.set(xv.subarray(off, off + last), o);
    o += last;
    let d = rank - 2;
    while (d >= 0) {
      idx[d]! += 1;
      if (idx[d]! < sz[d]!) break;
      idx[d] = 0;
      d--;
    }
    if (d < 0) break;
  }
  return out;
}

let registered = false;

/** Swap in the kernels above; call once after the wasm backend is active. */
export function registerWasmKernelFixes(): void {
  if (registered) return;
  registered = true;
  const swap = (
    kernelName: string,
    kernelFunc: (args: { inputs: Record<string, Info>; attrs: Record<string, unknown>; backend: WasmBackend }) => Info | Info[],
  ) => {
    tf.unregisterKernel(kernelName, 'wasm');
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc as unknown as tf.KernelFunc });
  };
  swap('Slice', ({ inputs, attrs, backend }) => {
    const x = inputs['x']!;
    // The same normalisation of begin/size (numbers, short arrays, -1) as the stock kernel.
    const [b, s] = tf.slice_util.parseSliceParams(x as unknown as tf.TensorInfo, attrs['begin'] as number[], attrs['size'] as number[]);
    return sliceImpl(x, b!, s!, backend);
  });
  swap('Unpack', ({ inputs, attrs, backend }) => {
    const value = inputs['value']!;
    let axis = attrs['axis'] as number;
    if (axis < 0) axis += value.shape.length;
    const outShape = value.shape.filter((_, i) => i !== axis);
    const size = [...value.shape];
    size[axis] = 1;
    const outs: Info[] = [];
    for (let i = 0; i < value.shape[axis]!; i++) {
      const begin = new Array<number>(value.shape.length).fill(0);
      begin[axis] = i;
      const o = sliceImpl(value, begin, size, backend);
      outs.push({ dataId: o.dataId, dtype: o.dtype, shape: outShape });
    }
    return outs;
  });
  swap('SplitV', ({ inputs, attrs, backend }) => {
    const x = inputs['x']!;
    let axis = attrs['axis'] as number;
    if (axis < 0) axis += x.shape.length;
    const spec = attrs['numOrSizeSplits'] as number | number[];
    let sizes: number[];
    if (typeof spec === 'number') sizes = new Array<number>(spec).fill(x.shape[axis]! / spec);
    else {
      const known = spec.filter((v) => v !== -1).reduce((a, c) => a + c, 0);
      sizes = spec.map((v) => (v === -1 ? x.shape[axis]! - known : v));
    }
    const begin = new Array<number>(x.shape.length).fill(0);
    return sizes.map((s) => {
      const size = [...x.shape];
      size[axis] = s;
      const o = sliceImpl(x, [...begin], size, backend);
      begin[axis]! += s;
      return o;
    });
  });
}
