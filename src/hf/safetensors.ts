/**
 * Safetensors, part of the HF format module (https://github.com/huggingface/safetensors), TensorFlow-free:
 * an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
 * then the raw little-endian data.
 *
 * Large checkpoints are read lazily: `openSafetensors` parses only the
 * header, `openWeights` a whole folder (single file, sharded index, or every
 * `*.safetensors`), and each tensor's bytes are read when asked for, so a
 * caller holds at most one tensor at a time (loading, export). Writing is
 * streamed the same way (`SafetensorsWriter`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { writeFdAtomic } from '../util/atomic.js';
import { f16BitsToF32, f32ToF16 } from '../util/f16.js';

export type StDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Float dtypes model weights may have; integer/bool tensors are never silently cast. */
export function isFloatDtype(d: StDtype): boolean {
  return d === 'F32' || d === 'F16' || d === 'BF16' || d === 'F64';
}

export interface StTensor {
  dtype: StDtype;
  shape: number[];
  /** Values converted to f32. */
  data: Float32Array;
}

/** One tensor's place in one file (header only; the bytes stay on disk). */
export interface StEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  file: string;
  /** Absolute byte range in `file`. */
  start: number;
  bytes: number;
}

export interface StFile {
  file: string;
  entries: StEntry[];
  metadata: Record<string, string>;
}

/** Headers above this are refused: real ones are a few hundred KiB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function corrupt(file: string, msg: string): never {
  throw new ChatsftError('FILE_CORRUPT', `invalid safetensors: ${msg}`, file);
}

export function numelOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The keys of the top-level object of valid JSON text, in order, duplicates
 * kept: JSON.parse keeps only the last of duplicate keys, which for a
 * safetensors header means silently reading the wrong bytes.
 */
function topLevelKeys(s: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"') {
      let j = i + 1;
      while (s[j] !== '"') j += s[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(s.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** Parse and check one file's header (names, dtypes, shapes, offsets); reads no tensor data. */
export function openSafetensors(file: string): StFile {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new ChatsftError('FILE_MISSING', 'cannot open safetensors file', file);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) corrupt(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8))) {
      corrupt(file, `header length ${n} exceeds the file (${fileSize} bytes) or the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const headerLen = Number(n);
    const hbuf = Buffer.alloc(headerLen);
    fs.readSync(fd, hbuf, 0, headerLen, 8);
    const text = hbuf.toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      corrupt(file, `header is not JSON (${(e as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) corrupt(file, 'header is not a JSON object');
    const seen = new Set<string>();
    for (const k of topLevelKeys(text)) {
      if (seen.has(k)) corrupt(file, `tensor '${k}' appears twice in the header`);
      seen.add(k);
    }
    const dataStart = 8 + headerLen;
    const dataLen = fileSize - dataStart;
    const metadata: Record<string, string> = {};
    const entries: StEntry[] = [];
    const ranges: { name: string; begin: number; end: number }[] = [];
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof raw !== 'object' || raw === null) corrupt(file, '__metadata__ is not an object');
        for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
          if (typeof v !== 'string') corrupt(file, `__metadata__.${k} is not a string`);
          metadata[k] = v;
        }
        continue;
      }
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e !== 'object' || e === null) corrupt(file, `entry '${name}' is not an object`);
      if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES))
        corrupt(file, `tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)}`);
      const dtype = e.dtype as StDtype;
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        corrupt(file, `tensor '${name}' has an invalid shape ${JSON.stringify(e.shape)}`);
      }
      const shape = e.shape as number[];
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0)) {
        corrupt(file, `tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`);
      }
      const [begin, end] = off as [number, number];
      if (begin > end || end > dataLen)
        corrupt(file, `tensor '${name}' data_offsets [${begin}, ${end}] lie outside the ${dataLen}-byte data section`);
      const need = numelOf(shape) * DTYPE_BYTES[dtype];
      if (end - begin !== need)
        corrupt(file, `tensor '${name}' has ${end - begin} bytes but shape [${shape.join(', ')}] × ${dtype} needs ${need}`);
      entries.push({ name, dtype, shape, file, start: dataStart + begin, bytes: end - begin });
      ranges.push({ name, begin, end });
    }
    ranges.sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < ranges.length; i++) {
      if (ranges[i]!.begin < ranges[i - 1]!.end) corrupt(file, `tensors '${ranges[i - 1]!.name}' and '${ranges[i]!.name}' overlap`);
    }
    return { file, entries, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/** The raw little-endian bytes of one tensor. */
export function readRaw(e: StEntry): Buffer {
  const buf = Buffer.allocUnsafe(e.bytes);
  if (e.bytes === 0) return buf;
  const fd = fs.openSync(e.file, 'r');
  try {
    let done = 0;
    while (done < e.bytes) {
      const n = fs.readSync(fd, buf, done, Math.min(e.bytes - done, 1 << 30), e.start + done);
      if (n === 0) corrupt(e.file, `file ends inside tensor '${e.name}'`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

let f16Lut: Float32Array | undefined;
/** All 65 536 half-precision values as f32 (256 KiB), built on first use. */
function f16Table(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16BitsToF32(h);
  }
  return f16Lut;
}

/** 16-bit words of a 2-byte-dtype tensor (a copy when `buf` is not 2-aligned). */
export function u16View(buf: Uint8Array): Uint16Array {
  if (buf.byteOffset % 2 === 0) return new Uint16Array(buf.buffer, buf.byteOffset, buf.byteLength / 2);
  return new Uint16Array(Uint8Array.from(buf).buffer);
}

/** bf16 / f16 words → f32 (into `out` when given). */
export function halfToF32(words: Uint16Array, dtype: 'F16' | 'BF16', out = new Float32Array(words.length)): Float32Array {
  if (dtype === 'BF16') {
    // bf16 is the top half of an f32: shift into place through a u32 view.
    const u32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < words.length; i++) u32[i] = words[i]! << 16;
  } else {
    const lut = f16Table();
    for (let i = 0; i < words.length; i++) out[i] = lut[words[i]!]!;
  }
  return out;
}

/** f32 → bf16 words, round to nearest even (torch's `.to(torch.bfloat16)`); NaN stays NaN. */
export function f32ToBf16(data: Float32Array): Uint16Array {
  const u32 = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const b = u32[i]!;
    if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) out[i] = (b >>> 16) | 0x40;
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Bytes of any dtype → f32 values. */
export function decodeF32(buf: Uint8Array, dtype: StDtype, numel: number): Float32Array {
  if (dtype === 'F16' || dtype === 'BF16') return halfToF32(u16View(buf), dtype);
  const out = new Float32Array(numel);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  switch (dtype) {
    case 'F32':
      if (buf.byteOffset % 4 === 0) out.set(new Float32Array(buf.buffer, buf.byteOffset, numel));
      else for (let i = 0; i < numel; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < numel; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case 'I64':
      for (let i = 0; i < numel; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < numel; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < numel; i++) out[i] = dv.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < numel; i++) out[i] = dv.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < numel; i++) out[i] = dv.getUint8(i);
      break;
  }
  return out;
}

/** One tensor's values as f32. */
export function readF32(e: StEntry): Float32Array {
  return decodeF32(readRaw(e), e.dtype, numelOf(e.shape));
}

/** Read every tensor of one safetensors file, converted to f32 (small files: checkpoints, adapters). */
export function readSafetensors(file: string): { tensors: Map<string, StTensor>; metadata: Record<string, string> } {
  const f = openSafetensors(file);
  const tensors = new Map<string, StTensor>();
  for (const e of f.entries) tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: readF32(e) });
  return { tensors, metadata: f.metadata };
}

/** A model folder's weights, headers only. */
export interface WeightIndex {
  dir: string;
  files: string[];
  /** In file order, then header order. */
  entries: Map<string, StEntry>;
  /** Sum of tensor data bytes. */
  totalBytes: number;
}

/**
 * The weights of a model folder: `model.safetensors.index.json` (sharded),
 * else `model.safetensors`, else every `*.safetensors` in it. A tensor in
 * two shards, or an index that disagrees with its shards, is an error.
 */
export function openWeights(dir: string): WeightIndex {
  const index = path.join(dir, 'model.safetensors.index.json');
  const single = path.join(dir, 'model.safetensors');
  let files: string[];
  let weightMap: Record<string, string> | null = null;
  if (fs.existsSync(index)) {
    let wm: unknown;
    try {
      wm = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw new ChatsftError('FILE_CORRUPT', `not JSON (${(e as Error).message})`, index);
    }
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new ChatsftError('FILE_CORRUPT', 'missing weight_map', index);
    weightMap = wm as Record<string, string>;
    const shards = new Set(Object.values(weightMap));
    files = [...shards].sort().map((s) => {
      if (typeof s !== 'string' || s.includes('/') || s.includes('\\'))
        throw new ChatsftError('FILE_CORRUPT', `bad shard name ${JSON.stringify(s)}`, index);
      return path.join(dir, s);
    });
  } else if (fs.existsSync(single)) {
    files = [single];
  } else {
    files = fs.existsSync(dir)
      ? fs
          .readdirSync(dir)
          .filter((f) => f.endsWith('.safetensors'))
          .sort()
          .map((f) => path.join(dir, f))
      : [];
  }
  if (files.length === 0) throw new ChatsftError('FILE_MISSING', 'no *.safetensors weights found', dir);
  const entries = new Map<string, StEntry>();
  let totalBytes = 0;
  for (const f of files) {
    for (const e of openSafetensors(f).entries) {
      if (entries.has(e.name))
        throw new ChatsftError(
          'FILE_CORRUPT',
          `tensor '${e.name}' appears in more than one shard (${path.basename(entries.get(e.name)!.file)} and ${path.basename(f)})`,
          f,
        );
      if (weightMap && weightMap[e.name] !== path.basename(f)) {
        throw new ChatsftError(
          'FILE_CORRUPT',
          `tensor '${e.name}' is in ${path.basename(f)} but the index says ${JSON.stringify(weightMap[e.name] ?? null)}`,
          index,
        );
      }
      entries.set(e.name, e);
      totalBytes += e.bytes;
    }
  }
  if (weightMap) {
    for (const [name, shard] of Object.entries(weightMap)) {
      if (!entries.has(name))
        throw new ChatsftError('FILE_CORRUPT', `the index lists tensor '${name}' in ${shard}, which does not contain it`, index);
    }
  }
  return { dir, files, entries, totalBytes };
}

/** Every tensor of a folder as f32 (small models and tests; large ones go through openWeights). */
export function readSafetensorsDir(dir: string): Map<string, StTensor> {
  const out = new Map<string, StTensor>();
  for (const [name, e] of openWeights(dir).entries) out.set(name, { dtype: e.dtype, shape: e.shape, data: readF32(e) });
  return out;
}

export type WriteDtype = 'F32' | 'F16' | 'BF16';

export interface TensorSpec {
  name: string;
  shape: number[];
  dtype: WriteDtype;
}

/** f32 values, or raw words already in the spec's dtype (copied through unchanged). */
export type TensorData = Float32Array | Uint16Array;

function encode(data: TensorData, dtype: WriteDtype, name: string, file: string): Uint8Array {
  if (data instanceof Uint16Array) {
    if (dtype === 'F32') throw new ChatsftError('ENGINE_ERROR', `tensor '${name}': 16-bit words given for an F32 tensor`, file);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  // Typed arrays are little-endian on every platform Node supports. F16
  // rounds to nearest even, as torch's .half() does.
  const out = dtype === 'F16' ? f32ToF16(data) : dtype === 'BF16' ? f32ToBf16(data) : data;
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Streams tensors into one safetensors file: the header is written from the
 * specs up front, then each tensor's data in spec order, so memory holds one
 * tensor at a time. Names are sorted as `safetensors` does and the header
 * is space-padded so the data section starts 8-byte aligned. Atomic: the
 * file appears under its name only when `write` has returned.
 */
export function writeSafetensorsStream(
  file: string,
  specs: TensorSpec[],
  produce: (spec: TensorSpec) => TensorData,
  metadata?: Record<string, string>,
): void {
  const sorted = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  let offset = 0;
  for (const s of sorted) {
    if (s.name in header) throw new ChatsftError('ENGINE_ERROR', `tensor '${s.name}' given twice`, file);
    const bytes = numelOf(s.shape) * DTYPE_BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const rawLen = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + rawLen) % 8)) % 8);
  const hbuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hbuf.length));
  writeFdAtomic(file, (fd) => {
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, hbuf);
    for (const s of sorted) {
      const data = produce(s);
      if (data.length !== numelOf(s.shape)) {
        throw new ChatsftError('ENGINE_ERROR', `tensor '${s.name}' has ${data.length} values but shape [${s.shape.join(', ')}]`, file);
      }
      const bytes = encode(data, s.dtype, s.name, file);
      let done = 0;
      while (done < bytes.byteLength) done += fs.writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, 1 << 30));
    }
  });
}

/** Write in-memory f32 tensors atomically (F32, F16 or BF16 on disk). */
export function writeSafetensors(
  file: string,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
  opts: { dtype?: WriteDtype } = {},
): void {
  const dtype = opts.dtype ?? 'F32';
  const specs = [...tensors].map(([name, t]) => ({ name, shape: t.shape, dtype }));
  writeSafetensorsStream(file, specs, (s) => tensors.get(s.name)!.data, metadata);
}
