/**
 * The one way chatsft reads a JSONL file (SPEC §3), for every command that
 * reads conversations: streamed in 64 KiB chunks and split on '\n' as bytes,
 * so a file is never loaded whole and a huge line is never held at all; a
 * UTF-8 BOM at the start of the file is stripped; each line is decoded
 * strictly, so invalid UTF-8 is a bad line with its number instead of U+FFFD
 * text trained on silently.
 *
 *   for await (const l of readLines('chats.jsonl')) if ('text' in l) parse(l.text);
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { ChatsftError } from '../errors.js';
import { userErrorFromOs } from '../util/fs-errors.js';

/** Why a line could not even be decoded. */
export type LineProblem = 'invalid_utf8' | 'line_too_large';

export type RawLine =
  { line: number; bytes: number; text: string } | { line: number; bytes: number; problem: LineProblem; message: string };

/**
 * Lines longer than this are skipped without being read into memory. No
 * model chatsft trains fits a 64 MiB conversation, and a single JS string
 * cannot pass 512 MiB anyway (reading one would crash, not report).
 */
export const MAX_LINE_BYTES = 64 * 1024 * 1024;

export interface ReadLinesOptions {
  maxLineBytes?: number;
}

const BOM = [0xef, 0xbb, 0xbf];

/** Byte offset of the first byte that is not valid UTF-8 (RFC 3629), or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i] as number;
    if (c < 0x80) {
      i++;
      continue;
    }
    let n: number;
    let min: number;
    if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/** Stream the lines of `file`, 1-based, decoded or marked bad; `bytes` counts the line and its newline. */
export async function* readLines(file: string, opts: ReadLinesOptions = {}): AsyncGenerator<RawLine> {
  if (!existsSync(file)) throw new ChatsftError('FILE_MISSING', 'data file not found', file);
  if (statSync(file).isDirectory()) throw new ChatsftError('IO_ERROR', 'is a folder, not a JSONL file (EISDIR)', file);
  const cap = opts.maxLineBytes ?? MAX_LINE_BYTES;
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  let parts: Buffer[] = [];
  let size = 0; // bytes of the current line so far (counted even when not kept)
  let line = 0;
  let first = true;

  const finish = (): RawLine => {
    line++;
    const bytes = size + 1;
    if (size > cap) {
      const r: RawLine = {
        line,
        bytes,
        problem: 'line_too_large',
        message: `line is ${size} bytes, over the limit of ${cap} bytes per line; skipped unread`,
      };
      parts = [];
      size = 0;
      return r;
    }
    let buf = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
    parts = [];
    size = 0;
    if (first && buf.length >= 3 && buf[0] === BOM[0] && buf[1] === BOM[1] && buf[2] === BOM[2]) buf = buf.subarray(3);
    // A UTF-16 file would otherwise be reported line by line as invalid UTF-8.
    if (first && buf.length >= 2 && ((buf[0] === 0xff && buf[1] === 0xfe) || (buf[0] === 0xfe && buf[1] === 0xff))) {
      throw new ChatsftError(
        'DATA_INVALID',
        'the file is UTF-16 (it starts with a UTF-16 byte-order mark); JSONL must be UTF-8: re-encode it (iconv -f UTF-16 -t UTF-8)',
        file,
      );
    }
    first = false;
    if (buf.length > 0 && buf[buf.length - 1] === 0x0d) buf = buf.subarray(0, buf.length - 1); // CRLF files
    try {
      return { line, bytes, text: decoder.decode(buf) };
    } catch {
      const at = firstInvalidUtf8(buf);
      const what = at >= 0 ? ` (byte 0x${(buf[at] as number).toString(16).padStart(2, '0')} at byte ${at} of the line)` : '';
      return { line, bytes, problem: 'invalid_utf8', message: `not valid UTF-8${what}; re-encode the file as UTF-8` };
    }
  };

  const stream = createReadStream(file, { highWaterMark: 1 << 16 });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let pos = 0;
      while (pos < chunk.length) {
        const nl = chunk.indexOf(0x0a, pos);
        const end = nl < 0 ? chunk.length : nl;
        if (end > pos) {
          // Past the cap the bytes are only counted, never kept.
          if (size + (end - pos) <= cap) parts.push(chunk.subarray(pos, end));
          else parts = [];
          size += end - pos;
        }
        if (nl < 0) break;
        yield finish();
        pos = nl + 1;
      }
    }
  } catch (e) {
    if (e instanceof ChatsftError) throw e;
    // A read error (EACCES, EIO…) carries no path of its own here.
    throw userErrorFromOs(e, file);
  } finally {
    stream.destroy();
  }
  if (size > 0) {
    const last = finish();
    yield { ...last, bytes: last.bytes - 1 };
  }
}
