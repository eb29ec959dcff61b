/**
 * Writing a safetensors file in half precision, for Hugging Face exports
 * with `--dtype f16` (the engine's own writer stores F32 only). Values are
 * rounded to nearest even, as torch's `.half()` does; the header layout and
 * 8-byte alignment follow the engine's F32 writer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { f32ToF16 } from './f16.js';

export function writeSafetensorsF16(file: string, tensors: Map<string, { shape: number[]; data: Float32Array }>, metadata: Record<string, string>): void {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new ChatsftError('EXPORT_ERROR', `tensor '${name}' has ${t.data.length} values but shape [${t.shape.join(', ')}]`, file);
    header[name] = { dtype: 'F16', shape: t.shape, data_offsets: [offset, offset + numel * 2] };
    offset += numel * 2;
  }
  let json = JSON.stringify(header);
  // Pad the header so tensor data starts 8-byte aligned (8-byte length prefix + header).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json, 'utf8')) % 8)) % 8);
  const hbuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hbuf.length));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, hbuf);
    for (const name of names) {
      const h = f32ToF16(tensors.get(name)!.data);
      // Uint16Array is little-endian on every platform Node supports.
      fs.writeSync(fd, new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
