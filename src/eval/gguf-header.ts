/**
 * A strict walk over a GGUF file's header, metadata and tensor infos,
 * checking each length against the file size. @huggingface/gguf returns
 * whatever metadata it managed to read from a truncated file, so a GGUF cut
 * inside its metadata used to be reported as "no chat template"
 * (TEMPLATE_MISSING) instead of truncated.
 *
 *   checkGgufHeader('model.gguf'); // throws FILE_CORRUPT naming the offset, or returns the header's end
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { ChatsftError } from '../errors.js';

/** Byte sizes of the fixed-size GGUF value types (by type id). */
const FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private at = 0; // file offset of buf[0]
  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly file: string,
    public where: () => string,
  ) {}

  /** Ensure `n` bytes from pos are readable, or say where the file ends. */
  need(n: number): void {
    if (this.pos + n > this.size) {
      throw new ChatsftError(
        'FILE_CORRUPT',
        `truncated inside its metadata: ${this.where()} needs bytes up to offset ${this.pos + n}, but the file ends at ${this.size} (an interrupted download or copy?)`,
        this.file,
      );
    }
  }

  private bytes(n: number): Buffer {
    this.need(n);
    if (this.pos < this.at || this.pos + n > this.at + this.buf.length) {
      this.at = this.pos;
      this.buf = Buffer.alloc(Math.min(Math.max(n, 1 << 20), this.size - this.pos));
      readSync(this.fd, this.buf, 0, this.buf.length, this.pos);
    }
    const out = this.buf.subarray(this.pos - this.at, this.pos - this.at + n);
    this.pos += n;
    return out;
  }

  u32(): number {
    return this.bytes(4).readUInt32LE(0);
  }
  u64(): number {
    const v = this.bytes(8).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.need(Number.MAX_SAFE_INTEGER);
    return Number(v);
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
  string(): string {
    const n = this.u64();
    return this.bytes(n).toString('utf8');
  }
}

/** Walk header, key/values and tensor infos; returns the offset where they end. */
export function checkGgufHeader(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    let where = 'the header';
    const c = new Cursor(fd, size, file, () => where);
    c.need(4);
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    if (magic.toString('latin1') !== 'GGUF') throw new ChatsftError('FILE_CORRUPT', 'not a GGUF file (no GGUF magic)', file);
    c.skip(4);
    const version = c.u32();
    if (version < 2) throw new ChatsftError('FILE_CORRUPT', `GGUF version ${version} is not supported (2 or 3)`, file);
    const tensors = c.u64();
    const kvs = c.u64();
    const value = (type: number, depth: number): void => {
      if (type === STRING) return void c.skip(c.u64());
      if (type === ARRAY) {
        if (depth > 4) throw new ChatsftError('FILE_CORRUPT', `${where}: arrays nested too deep`, file);
        const inner = c.u32();
        const n = c.u64();
        const fixed = FIXED[inner];
        if (fixed !== undefined) return c.skip(n * fixed);
        for (let i = 0; i < n; i++) value(inner, depth + 1);
        return;
      }
      const fixed = FIXED[type];
      if (fixed === undefined) throw new ChatsftError('FILE_CORRUPT', `${where}: unknown value type ${type} at offset ${c.pos - 4}`, file);
      c.skip(fixed);
    };
    for (let i = 0; i < kvs; i++) {
      where = `metadata entry ${i + 1} of ${kvs}`;
      const key = c.string();
      where = `metadata entry ${i + 1} of ${kvs} ('${key}')`;
      value(c.u32(), 0);
    }
    for (let i = 0; i < tensors; i++) {
      where = `tensor info ${i + 1} of ${tensors}`;
      c.string();
      const dims = c.u32();
      c.skip(dims * 8 + 4 + 8); // shape, ggml type, data offset
    }
    return c.pos;
  } finally {
    closeSync(fd);
  }
}
