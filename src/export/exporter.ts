/**
 * The one exporter interface: `export --format F` looks F up in EXPORTERS
 * and calls it; each format says what it writes (a file or a folder), which
 * dtypes it takes, how it recognises an earlier output of its own, and
 * returns the same plain summary. Adding a format is one entry here plus
 * its module.
 *
 *   const e = EXPORTERS.gguf;
 *   const r = e.export('runs/chatsft', 'model.gguf', { eotToken: '<|im_end|>', dtype: 'f16' });
 */
import fs from 'node:fs';
import path from 'node:path';
import { readJson } from '../hf/files.js';
import { exportGguf, notChatsftGguf } from './gguf.js';
import { exportHf, notExportFolder } from './hf.js';

export type ExportFormat = 'hf' | 'gguf';
export type ExportDtype = 'f32' | 'f16' | 'bf16';

export interface ExportRequest {
  /** The token that closes assistant turns. */
  eotToken: string;
  dtype: ExportDtype;
  overwrite?: boolean;
  onNote?: (line: string) => void;
}

export interface ExportOutcome {
  /** Absolute path of the file or folder written. */
  out: string;
  /** Bytes written (the file, or every file of the folder). */
  bytes: number;
  arch: string;
  bosId: number | null;
  /** The eos the output names (GGUF's eos slot); null where the format leaves it to the tokenizer (hf). */
  eosId: number | null;
  eotId: number;
  padId: number | null;
  /** Ids the exported model stops on. */
  stopIds: number[];
  files: string[];
  /** Where a copied PEFT adapter came from, else null. */
  adapter: string | null;
  warnings: string[];
}

export interface Exporter {
  format: ExportFormat;
  /** What `out` is. */
  output: 'file' | 'dir';
  defaultDtype: ExportDtype;
  dtypes: readonly ExportDtype[];
  /** Why `out` is not an earlier output of this exporter (null when it is): only those are replaced. */
  notOwned(out: string): string | null;
  export(model: string, out: string, req: ExportRequest): ExportOutcome;
}

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? folderBytes(p) : fs.statSync(p).size;
  }
  return n;
}

const gguf: Exporter = {
  format: 'gguf',
  output: 'file',
  defaultDtype: 'f16',
  dtypes: ['f32', 'f16'],
  notOwned: notChatsftGguf,
  export(model, out, req) {
    const r = exportGguf(model, out, {
      eotToken: req.eotToken,
      dtype: req.dtype === 'bf16' ? 'f16' : req.dtype,
      overwrite: Boolean(req.overwrite),
      ...(req.onNote ? { onNote: req.onNote } : {}),
    });
    const t = r.tokenizer;
    const warnings: string[] = [];
    if (r.droppedStopIds.length > 0) {
      warnings.push(
        `generation_config stop ids ${r.droppedStopIds.join(', ')} have no GGUF slot (GGUF carries one eos and one eot); llama.cpp stops on ${t.eosId} and ${t.eotId}`,
      );
    }
    return {
      out: path.resolve(out),
      bytes: r.bytes,
      arch: r.arch,
      bosId: t.bosId,
      eosId: t.eosId,
      eotId: t.eotId,
      padId: t.padId,
      // llama.cpp's end-of-generation set is built from eos, eot (and eom) ids.
      stopIds: [...new Set([t.eotId, t.eosId])],
      files: [path.basename(out)],
      adapter: null,
      warnings,
    };
  },
};

const hf: Exporter = {
  format: 'hf',
  output: 'dir',
  defaultDtype: 'f32',
  dtypes: ['f32', 'f16', 'bf16'],
  notOwned: notExportFolder,
  export(model, out, req) {
    const r = exportHf(model, out, {
      eotToken: req.eotToken,
      overwrite: Boolean(req.overwrite),
      dtype: req.dtype,
      ...(req.onNote ? { onNote: req.onNote } : {}),
    });
    const cfg = readJson(path.join(model, 'config.json'));
    const archs = cfg['architectures'];
    return {
      out: r.dir,
      bytes: folderBytes(r.dir),
      arch: Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : String(cfg['model_type'] ?? 'unknown'),
      bosId: r.bosTokenId,
      eosId: null,
      eotId: r.eotTokenId,
      padId: r.padTokenId,
      stopIds: r.eosTokenIds,
      files: r.files,
      adapter: r.adapterFrom,
      warnings: [],
    };
  },
};

export const EXPORTERS: Readonly<Record<ExportFormat, Exporter>> = { hf, gguf };

export function isExportFormat(v: unknown): v is ExportFormat {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(EXPORTERS, v);
}
