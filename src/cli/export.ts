// chatsft export --model runs/chatsft --format gguf --out model.gguf [--dtype f16] [--eot '<|im_end|>'] [--json]
import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { loadModelFolder } from '../model/folder.js';
import { discoverEot } from '../model/eot.js';
import { EXPORTERS, isExportFormat, type ExportDtype } from '../export/exporter.js';
import { checkOutput } from '../util/atomic.js';
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
  if (!isExportFormat(opts.format))
    throw new ChatsftError('USAGE', `--format must be ${Object.keys(EXPORTERS).join(' or ')}, not ${JSON.stringify(opts.format)}`);
  const exporter = EXPORTERS[opts.format];
  const dtype = (opts.dtype ?? exporter.defaultDtype) as ExportDtype;
  if (!exporter.dtypes.includes(dtype))
    throw new ChatsftError('USAGE', `--dtype must be ${exporter.dtypes.join(' or ')}, not ${JSON.stringify(dtype)}`);
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
    kind: exporter.output,
    overwrite: Boolean(opts.overwrite),
    notOwned: exporter.notOwned,
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
  const r = exporter.export(model, out, { eotToken: eot.token, dtype, overwrite: Boolean(opts.overwrite), onNote: note });
  return {
    format: exporter.format,
    out: r.out,
    bytes: r.bytes,
    arch: r.arch,
    dtype,
    eot_token: eot.token,
    eot_source: eot.source,
    bos_token_id: r.bosId,
    eos_token_id: r.eosId ?? tokenizerEos,
    eot_token_id: r.eotId,
    pad_token_id: r.padId,
    stop_ids: r.stopIds,
    files: r.files,
    adapter: r.adapter,
    warnings: [...warnings, ...r.warnings],
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
