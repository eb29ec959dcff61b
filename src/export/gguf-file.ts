/**
 * GGUF v3 serialisation (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
 *
 *   magic "GGUF" | u32 version=3 | u64 tensor_count | u64 kv_count
 *   kv_count × (string key, u32 value type, value)
 *   tensor_count × (string name, u32 n_dims, n_dims × u64 dim (innermost
 *     first), u32 ggml type, u64 offset into the data section)
 *   zero padding to `general.alignment`
 *   data section: each tensor at its offset, offsets multiples of the alignment
 *
 * Strings are u64 byte length + UTF-8 bytes, no terminator. Everything is
 * little-endian. `@huggingface/gguf` 0.4.6 can serialise metadata, but it pads
 * the KV block to the alignment (which would corrupt the tensor infos that
 * follow) and allocates per array element, so the writer is our own and that
 * package is used as an independent reader in the tests.
 */
import fs from 'node:fs';
import { writeFdAtomic } from '../util/atomic.js';
import { ChatsftError } from '../errors.js';
import { f32ToF16 } from '../util/f16.js';

/** GGUF metadata value types (gguf.md `gguf_metadata_value_type`). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufScalarType = Exclude<(typeof GgufType)[keyof typeof GgufType], 9>;

export type GgufKv =
  | { key: string; type: GgufScalarType; value: number | bigint | boolean | string }
  | { key: string; type: 9; itemType: GgufScalarType; value: ReadonlyArray<number | bigint | boolean | string> };

/** ggml tensor types we write (ggml.h `ggml_type`). */
export const GGML_TYPE_F32 = 0;
export const GGML_TYPE_F16 = 1;
export type GgmlTensorType = typeof GGML_TYPE_F32 | typeof GGML_TYPE_F16;

export interface GgufTensor {
  name: string;
  /** Row-major shape as in PyTorch/safetensors ([out, in] for a linear). */
  shape: number[];
  type: GgmlTensorType;
  /** f32 values; converted to `type` while writing. A function defers the work (and memory) to write time. */
  data: Float32Array | (() => Float32Array);
}

export const GGUF_DEFAULT_ALIGNMENT = 32;

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Grows a byte buffer; the header of a 150k-token vocabulary is a few MiB. */
class ByteSink {
  buf = Buffer.alloc(1 << 16);
  len = 0;
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.len);
    this.len += 4;
  }
  u64(v: number | bigint): void {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.len);
    this.len += 8;
  }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.ensure(n);
    this.buf.write(s, this.len, 'utf8');
    this.len += n;
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string, key: string): void {
    if (type === GgufType.STRING) {
      if (typeof v !== 'string') bad(key, `expected a string, got ${typeof v}`);
      this.str(v);
      return;
    }
    const n = SCALAR_BYTES[type];
    if (n === undefined) bad(key, `unknown value type ${type}`);
    this.ensure(n);
    const b = this.buf;
    const o = this.len;
    if (type === GgufType.BOOL) {
      if (typeof v !== 'boolean') bad(key, `expected a boolean, got ${typeof v}`);
      b.writeUInt8(v ? 1 : 0, o);
    } else if (type === GgufType.UINT64 || type === GgufType.INT64) {
      if (typeof v !== 'number' && typeof v !== 'bigint') bad(key, `expected an integer, got ${typeof v}`);
      if (type === GgufType.UINT64) b.writeBigUInt64LE(BigInt(v), o);
      else b.writeBigInt64LE(BigInt(v), o);
    } else {
      if (typeof v !== 'number') bad(key, `expected a number, got ${typeof v}`);
      switch (type) {
        case GgufType.UINT8:
          b.writeUInt8(v, o);
          break;
        case GgufType.INT8:
          b.writeInt8(v, o);
          break;
        case GgufType.UINT16:
          b.writeUInt16LE(v, o);
          break;
        case GgufType.INT16:
          b.writeInt16LE(v, o);
          break;
        case GgufType.UINT32:
          b.writeUInt32LE(v, o);
          break;
        case GgufType.INT32:
          b.writeInt32LE(v, o);
          break;
        case GgufType.FLOAT32:
          b.writeFloatLE(v, o);
          break;
        case GgufType.FLOAT64:
          b.writeDoubleLE(v, o);
          break;
      }
    }
    this.len += n;
  }
}

function bad(key: string, msg: string): never {
  throw new ChatsftError('EXPORT_ERROR', `GGUF metadata ${key}: ${msg}`);
}

function tensorBytes(t: GgufTensor): number {
  const n = t.shape.reduce((a, b) => a * b, 1);
  return n * (t.type === GGML_TYPE_F16 ? 2 : 4);
}

const pad = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Write a GGUF v3 file atomically (temp file + rename). `general.alignment`
 * is taken from `kvs` when present (u32), else 32.
 */
export function writeGguf(file: string, kvs: readonly GgufKv[], tensors: readonly GgufTensor[]): { bytes: number } {
  const keys = new Set<string>();
  for (const kv of kvs) {
    if (keys.has(kv.key)) bad(kv.key, 'duplicate key');
    keys.add(kv.key);
  }
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new ChatsftError('EXPORT_ERROR', `duplicate GGUF tensor '${t.name}'`);
    names.add(t.name);
  }
  const alignKv = kvs.find((k) => k.key === 'general.alignment');
  const alignment = alignKv && typeof alignKv.value === 'number' ? alignKv.value : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0)
    bad('general.alignment', `must be a positive multiple of 8, got ${alignment}`);

  const h = new ByteSink();
  h.buf.write('GGUF', 0, 'ascii');
  h.len = 4;
  h.u32(3);
  h.u64(tensors.length);
  h.u64(kvs.length);
  for (const kv of kvs) {
    h.str(kv.key);
    h.u32(kv.type);
    if (kv.type === GgufType.ARRAY) {
      h.u32(kv.itemType);
      h.u64(kv.value.length);
      for (const v of kv.value) h.scalar(kv.itemType, v, kv.key);
    } else {
      h.scalar(kv.type, kv.value, kv.key);
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    h.str(t.name);
    h.u32(t.shape.length);
    // GGUF lists dimensions innermost first: a row-major [rows, cols] is ne = [cols, rows].
    for (let i = t.shape.length - 1; i >= 0; i--) h.u64(t.shape[i]!);
    h.u32(t.type);
    h.u64(offset);
    offsets.push(offset);
    offset = pad(offset + tensorBytes(t), alignment);
  }
  const headerLen = pad(h.len, alignment);

  let pos = 0;
  writeFdAtomic(file, (fd) => {
    fs.writeSync(fd, h.buf, 0, h.len, 0);
    pos = headerLen;
    tensors.forEach((t, i) => {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      const numel = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== numel) {
        throw new ChatsftError('EXPORT_ERROR', `tensor '${t.name}' has ${data.length} values but shape [${t.shape.join(', ')}]`);
      }
      const bytes = t.type === GGML_TYPE_F16 ? f32ToF16(data) : data;
      // Typed arrays are little-endian on every platform Node supports.
      fs.writeSync(fd, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, bytes.byteLength, headerLen + offsets[i]!);
      pos = headerLen + offsets[i]! + bytes.byteLength;
    });
    // Pad the file to a whole number of aligned blocks, as gguf-py does.
    const end = headerLen + offset;
    if (end > pos) fs.writeSync(fd, Buffer.alloc(end - pos), 0, end - pos, pos);
  });
  return { bytes: headerLen + offset };
}

/** Small constructors so call sites read as `kv.u32('llama.block_count', 2)`. */
export const kv = {
  str: (key: string, value: string): GgufKv => ({ key, type: GgufType.STRING, value }),
  u32: (key: string, value: number): GgufKv => ({ key, type: GgufType.UINT32, value }),
  i32: (key: string, value: number): GgufKv => ({ key, type: GgufType.INT32, value }),
  f32: (key: string, value: number): GgufKv => ({ key, type: GgufType.FLOAT32, value }),
  bool: (key: string, value: boolean): GgufKv => ({ key, type: GgufType.BOOL, value }),
  strs: (key: string, value: readonly string[]): GgufKv => ({ key, type: GgufType.ARRAY, itemType: GgufType.STRING, value }),
  i32s: (key: string, value: readonly number[]): GgufKv => ({ key, type: GgufType.ARRAY, itemType: GgufType.INT32, value }),
  f32s: (key: string, value: readonly number[]): GgufKv => ({ key, type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value }),
};
