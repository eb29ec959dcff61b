// chatsft export --model runs/chatsft --format gguf --out model.gguf [--dtype f16] [--eot '<|im_end|>'] [--json]
import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { loadModelFolder } from '../model/folder.js';
import { discoverEot } from '../model/eot.js';
import { exportGguf, notChatsftGguf } from '../export/gguf.js';
import { exportHf, notExportFolder } from '../export/hf.js';
import { checkOutput } from '../util/atomic.js';
import { readJson } from '../hf/files.js';
import { action, printJson } from './common.js';

/** What `--json` prints; the text output shows the same fields. */
export interface ExportSummary {
  format: 'hf' | 'gguf';
  out: string;
  /** Bytes written (the file, or every file of the folder). */
  bytes: number;
  arch: string;
  dtype: 'f32' | 'f16' | 'bf16';
  eot_token: string;
  /** `template`: found by rendering a probe conversation with the folder's chat template; `flag`: --eot. */
  eot_source: 'template' | 'flag';
  bos_token_id: number | null;
  eos_token_id: number | null;
  eot_token_id: number;
  pad_token_id: number | null;
  /** Ids the exported model stops on: generation_config eos_token_id (hf) or llama.cpp's end-of-generation set (gguf). */
  stop_ids: number[];
  files: string[];
  /** Where the copied PEFT adapter came from (hf), else null. */
  adapter: string | null;
  warnings: string[];
}

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? folderBytes(p) : fs.statSync(p).size;
  }
  return n;
}

function hasWeights(dir: string): boolean {
  return fs.readdirSync(dir).some((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json');
}

const mb = (b: number): string => `${(b / 1e6).toFixed(2)} MB`;

export async function runExport(opts: {
  model: string;
  format: string;
  out: string;
  dtype?: string;
  eot?: string;
  overwrite?: boolean;
}): Promise<ExportSummary> {
  const { model, out } = opts;
  if (opts.format !== 'hf' && opts.format !== 'gguf')
    throw new ChatsftError('USAGE', `--format must be hf or gguf, not ${JSON.stringify(opts.format)}`);
  const dtype = opts.dtype ?? (opts.format === 'gguf' ? 'f16' : 'f32');
  if (dtype !== 'f32' && dtype !== 'f16' && !(dtype === 'bf16' && opts.format === 'hf')) {
    throw new ChatsftError('USAGE', `--dtype must be f32 or f16${opts.format === 'hf' ? ' or bf16' : ''}, not ${JSON.stringify(dtype)}`);
  }
  const folder = loadModelFolder(model);
  if (!fs.existsSync(path.join(model, 'config.json')))
    throw new ChatsftError('MODEL_INVALID', 'no config.json: not a model folder with weights', model);
  if (!hasWeights(model)) {
    throw new ChatsftError(
      'MODEL_INVALID',
      `no weights (*.safetensors): ${opts.format === 'gguf' ? 'a GGUF' : 'an export'} needs a trained or pretrained model, not only a tokenizer`,
      model,
    );
  }
  // Refuse an output chatsft may not replace before the slow part (exportHf / exportGguf check again as they swap).
  checkOutput(out, {
    kind: opts.format === 'gguf' ? 'file' : 'dir',
    overwrite: Boolean(opts.overwrite),
    notOwned: opts.format === 'gguf' ? notChatsftGguf : notExportFolder,
    protect: [model],
  });

  const warnings: string[] = [];
  const note = (line: string): void => void process.stderr.write(`note: ${line}\n`);
  let eot: { token: string; source: 'flag' | 'template' };
  if (opts.eot === undefined) {
    eot = { token: (await discoverEot(folder)).token, source: 'template' };
  } else {
    eot = { token: opts.eot, source: 'flag' };
    // A stop token the model never learned to emit makes it ramble; say so when the template tells otherwise.
    const found = await discoverEot(folder).catch(() => null);
    if (found !== null && found.token !== opts.eot) {
      warnings.push(
        `--eot ${opts.eot} is not the token the chat template closes assistant turns with (${found.token}); the model learned to emit ${found.token}`,
      );
    }
  }
  const tokenizerEos = folder.eosToken === undefined ? null : (folder.tokenizer.tokenToId(folder.eosToken) ?? null);
  const cfg = readJson(path.join(model, 'config.json'));
  const archs = cfg['architectures'];

  if (opts.format === 'gguf') {
    const r = exportGguf(model, out, {
      eotToken: eot.token,
      dtype: dtype === 'bf16' ? 'f16' : dtype,
      overwrite: Boolean(opts.overwrite),
      onNote: note,
    });
    const t = r.tokenizer;
    if (r.droppedStopIds.length > 0) {
      warnings.push(
        `generation_config stop ids ${r.droppedStopIds.join(', ')} have no GGUF slot (GGUF carries one eos and one eot); llama.cpp stops on ${t.eosId} and ${t.eotId}`,
      );
    }
    return {
      format: 'gguf',
      out: path.resolve(out),
      bytes: r.bytes,
      arch: r.arch,
      dtype,
      eot_token: eot.token,
      eot_source: eot.source,
      bos_token_id: t.bosId,
      eos_token_id: t.eosId,
      eot_token_id: t.eotId,
      pad_token_id: t.padId,
      // llama.cpp's end-of-generation set is built from eos, eot (and eom) ids.
      stop_ids: [...new Set([t.eotId, t.eosId])],
      files: [path.basename(out)],
      adapter: null,
      warnings,
    };
  }
  const r = exportHf(model, out, { eotToken: eot.token, overwrite: Boolean(opts.overwrite), dtype, onNote: note });
  return {
    format: 'hf',
    out: r.dir,
    bytes: folderBytes(r.dir),
    arch: Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : String(cfg['model_type'] ?? 'unknown'),
    dtype,
    eot_token: eot.token,
    eot_source: eot.source,
    bos_token_id: r.bosTokenId,
    eos_token_id: tokenizerEos,
    eot_token_id: r.eotTokenId,
    pad_token_id: r.padTokenId,
    stop_ids: r.eosTokenIds,
    files: r.files,
    adapter: r.adapterFrom,
    warnings,
  };
}

function formatSummary(s: ExportSummary, name: (id: number | null) => string): string {
  const what = s.format === 'gguf' ? `GGUF ${s.dtype}` : `Hugging Face folder (${s.files.length} files, ${s.dtype})`;
  const lines = [
    `wrote ${s.out}  ${mb(s.bytes)}  ${what}  arch ${s.arch}`,
    `  eot   ${name(s.eot_token_id)}  (${s.eot_source === 'template' ? 'found with the chat template' : 'from --eot'})`,
    `  bos   ${name(s.bos_token_id)}   eos ${name(s.eos_token_id)}   pad ${name(s.pad_token_id)}`,
    `  stops ${s.stop_ids.map(name).join(', ')}  (${s.format === 'gguf' ? "llama.cpp's end-of-generation set" : 'generation_config.json eos_token_id'})`,
  ];
  if (s.adapter !== null) lines.push(`  adapter  PEFT LoRA copied to adapter/ (weights are already merged)`);
  return lines.join('\n') + '\n';
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('model folder → Hugging Face folder or GGUF, with the EOT among the stop ids (SPEC §9)')
    .requiredOption('--model <dir>', 'model folder (weights, config.json, tokenizer files)')
    .requiredOption('--format <format>', 'hf or gguf')
    .requiredOption('--out <path>', 'output folder (hf) or .gguf file')
    .option('--dtype <dtype>', 'f32 or f16 (GGUF: matrices, norms stay f32; HF: every tensor, or bf16). Default f16 for gguf, f32 for hf')
    .option('--eot <token>', 'end-of-turn token (default: found with the chat template)')
    .option('--overwrite', 'replace an earlier chatsft export (anything else is refused)')
    .option('--json', 'print the result as JSON on stdout')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const s = await runExport({
          model: opts['model'] as string,
          format: opts['format'] as string,
          out: opts['out'] as string,
          ...(typeof opts['dtype'] === 'string' ? { dtype: opts['dtype'] } : {}),
          ...(typeof opts['eot'] === 'string' ? { eot: opts['eot'] } : {}),
          overwrite: Boolean(opts['overwrite']),
        });
        for (const w of s.warnings) process.stderr.write(`warning: ${w}\n`);
        if (opts['json']) {
          printJson(s);
          return;
        }
        const tok = loadModelFolder(opts['model'] as string).tokenizer;
        const name = (id: number | null): string => (id === null ? '-' : `${tok.idToToken(id) ?? '?'} (${id})`);
        process.stdout.write(formatSummary(s, name));
      }),
    );
}
