/**
 * Safetensors reader/writer (https://github.com/huggingface/safetensors):
 * an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
 * then the raw little-endian data. Everything read is converted to f32,
 * the engine's only compute dtype; everything written is F32.
 */
import fs from 'node:fs';
import { writeFdAtomic } from '../util/atomic.js';
import { f32ToF16 } from '../util/f16.js';
import path from 'node:path';
import { ChatsftError } from '../errors.js';

export type StDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface StTensor {
  dtype: StDtype;
  shape: number[];
  /** Values converted to f32. */
  data: Float32Array;
}

const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Headers above this are refused: real ones are a few hundred KiB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

interface HeaderEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  begin: number;
  end: number;
}

function corrupt(file: string, msg: string): never {
  throw new ChatsftError('FILE_CORRUPT', `invalid safetensors: ${msg}`, file);
}

function parseHeader(file: string, fd: number, fileSize: number): { entries: HeaderEntry[]; metadata: Record<string, string>; dataStart: number } {
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
  let json: unknown;
  try {
    json = JSON.parse(hbuf.toString('utf8'));
  } catch (e) {
    corrupt(file, `header is not JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) corrupt(file, 'header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
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
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) corrupt(file, `tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)}`);
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
    if (begin > end || end > dataLen) corrupt(file, `tensor '${name}' data_offsets [${begin}, ${end}] lie outside the ${dataLen}-byte data section`);
    const numel = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== numel * DTYPE_BYTES[dtype]) {
      corrupt(file, `tensor '${name}' has ${end - begin} bytes but shape [${shape.join(', ')}] × ${dtype} needs ${numel * DTYPE_BYTES[dtype]}`);
    }
    entries.push({ name, dtype, shape, begin, end });
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.begin < prev.end) corrupt(file, `tensors '${prev.name}' and '${cur.name}' overlap`);
  }
  return { entries, metadata, dataStart };
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

let f16Lut: Float32Array | undefined;
/** All 65 536 half-precision values as f32 (256 KiB), built on first use. */
function f16Table(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16ToF32(h);
  }
  return f16Lut;
}

function decode(buf: Buffer, dtype: StDtype, numel: number): Float32Array {
  const out = new Float32Array(numel);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < numel; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < numel; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case 'F16': {
      const lut = f16Table();
      for (let i = 0; i < numel; i++) out[i] = lut[dv.getUint16(i * 2, true)]!;
      break;
    }
    case 'BF16': {
      // bf16 is the top half of an f32: shift into place through a u32 view.
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < numel; i++) u32[i] = dv.getUint16(i * 2, true) << 16;
      break;
    }
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

/** Read every tensor of one safetensors file, converted to f32. */
export function readSafetensors(file: string): { tensors: Map<string, StTensor>; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new ChatsftError('FILE_MISSING', 'cannot open safetensors file', file);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const { entries, metadata, dataStart } = parseHeader(file, fd, size);
    const tensors = new Map<string, StTensor>();
    for (const e of entries) {
      const buf = Buffer.alloc(e.end - e.begin);
      if (buf.length > 0) fs.readSync(fd, buf, 0, buf.length, dataStart + e.begin);
      const numel = e.shape.reduce((a, b) => a * b, 1);
      tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: decode(buf, e.dtype, numel) });
    }
    return { tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Read a model folder's weights: `model.safetensors`, a sharded
 * `model.safetensors.index.json`, or else every `*.safetensors` file in it.
 */
export function readSafetensorsDir(dir: string): Map<string, StTensor> {
  const index = path.join(dir, 'model.safetensors.index.json');
  const single = path.join(dir, 'model.safetensors');
  let files: string[];
  if (fs.existsSync(index)) {
    let weightMap: unknown;
    try {
      weightMap = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw new ChatsftError('FILE_CORRUPT', `not JSON (${(e as Error).message})`, index);
    }
    if (typeof weightMap !== 'object' || weightMap === null) throw new ChatsftError('FILE_CORRUPT', 'missing weight_map', index);
    const shards = new Set(Object.values(weightMap as Record<string, unknown>));
    files = [...shards].map((s) => {
      if (typeof s !== 'string' || s.includes('/') || s.includes('\\')) throw new ChatsftError('FILE_CORRUPT', `bad shard name ${JSON.stringify(s)}`, index);
      return path.join(dir, s);
    });
  } else if (fs.existsSync(single)) {
    files = [single];
  } else {
    files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => path.join(dir, f)) : [];
  }
  if (files.length === 0) throw new ChatsftError('FILE_MISSING', 'no *.safetensors weights found', dir);
  const out = new Map<string, StTensor>();
  for (const f of files) {
    for (const [name, t] of readSafetensors(f).tensors) {
      if (out.has(name)) throw new ChatsftError('FILE_CORRUPT', `tensor '${name}' appears in more than one shard`, f);
      out.set(name, t);
    }
  }
  return out;
}

/**
 * Write F32 tensors atomically (temp file + rename). Names are sorted and the
 * header is space-padded so the data section starts 8-byte aligned.
 */
export function writeSafetensors(
  file: string,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
  opts: { dtype?: 'F32' | 'F16' } = {},
): void {
  const dtype = opts.dtype ?? 'F32';
  const bytesPer = dtype === 'F16' ? 2 : 4;
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw new ChatsftError('ENGINE_ERROR', `tensor '${name}' has ${t.data.length} values but shape [${t.shape.join(', ')}]`, file);
    }
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + numel * bytesPer] };
    offset += numel * bytesPer;
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
    for (const name of names) {
      const d = tensors.get(name)!.data;
      // Typed arrays are little-endian on every platform Node supports. F16
      // rounds to nearest even, as torch's .half() does.
      const out = dtype === 'F16' ? f32ToF16(d) : d;
      fs.writeSync(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    }
  });
}
