// chatsft prepare --model ./mistral --data chats.jsonl --out prepared/ --max-length 2048 --packing
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { ChatsftError } from '../errors.js';
import { prepareToDir } from '../prepare/prepare.js';
import type { ShardFormat } from '../prepare/shards.js';
import { createProgress } from '../util/progress.js';
import { action, addConfigFlags, configFrom, printJson, VERSION } from './common.js';
import { intFlag } from './flags.js';
import { formatDataReport, type DataReport } from '../data/report.js';
import { encodeOptionsFrom, setupFromConfig } from '../prepare/from-config.js';

export { encodeOptionsFrom, setupFromConfig };

export const PIPELINE_KEYS = [
  'model',
  'data',
  'template',
  'template_vars',
  'train_on',
  'max_length',
  'truncation',
  'packing',
  'pad',
  'padding_side',
  'allow_special_tokens_in_content',
];

export function registerPrepare(program: Command): void {
  const cmd = program
    .command('prepare')
    .description('conversations (JSONL) → tokenized, masked (optionally packed) shards + manifest.json');
  addConfigFlags(cmd, PIPELINE_KEYS)
    .requiredOption('--out <dir>', 'output folder')
    .option('--format <format>', 'parquet or jsonl', 'parquet')
    .option('--shard-rows <n>', 'rows per shard file', '50000')
    .option('--overwrite', 'replace an earlier prepared folder (only one chatsft wrote; anything else is refused)')
    .option('--json', 'print the manifest summary as JSON on stdout')
    .option('--quiet', 'no progress or per-line reports')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (!cfg.data.train) throw new ChatsftError('USAGE', 'missing --data FILE');
        const shardRows = intFlag(opts['shardRows'] ?? 50000, 'shard-rows', { min: 1 });
        const format = opts['format'] as ShardFormat;
        if (format !== 'parquet' && format !== 'jsonl')
          throw new ChatsftError('USAGE', `--format must be parquet or jsonl, not ${String(format)}`);
        const setup = setupFromConfig(cfg);
        if (setup.padWarning && !opts['quiet']) process.stderr.write(`warning: ${setup.padWarning}\n`);
        if (!existsSync(cfg.data.train)) throw new ChatsftError('FILE_MISSING', 'data file not found', cfg.data.train);
        const totalMb = statSync(cfg.data.train).size / 1e6;
        const progress = createProgress({ label: 'prepare', unit: 'MB', total: totalMb, silent: Boolean(opts['quiet']) });
        let shown = 0;
        const reports: Partial<Record<'train' | 'eval', DataReport>> = {};
        const manifest = await prepareToDir(setup, cfg.data.train, {
          ...encodeOptionsFrom(cfg),
          packing: cfg.packing,
          out: opts['out'] as string,
          format,
          shardRows,
          overwrite: Boolean(opts['overwrite']),
          modelDir: resolve(cfg.model as string),
          version: VERSION,
          ...(cfg.data.eval ? { evalData: cfg.data.eval } : {}),
          onProgress: (p) => {
            progress.update(p.bytes / 1e6, { tokens: p.tokens - shown, info: `${p.examples} examples` });
            shown = p.tokens;
          },
          // Shown as soon as a split is read, so a run that then fails (no usable example) still lists its lines.
          onReport: (split, r) => {
            reports[split] = r;
            if (!opts['quiet']) for (const l of formatDataReport(r)) progress.log(`warning: ${l}`);
          },
          onNote: (m) => progress.log(`note: ${m}`),
        });
        progress.done(`prepared ${manifest.examples} examples, ${manifest.tokens} tokens in ${progress.elapsed().toFixed(1)} s`);
        const summary = {
          out: resolve(opts['out'] as string),
          examples: manifest.examples,
          rows: manifest.rows,
          tokens: manifest.tokens,
          supervised_tokens: manifest.supervised_tokens,
          assistant_turns: manifest.assistant_turns,
          trained_turns: manifest.trained_turns,
          supervised_eot: manifest.supervised_eot,
          dropped: manifest.dropped,
          pad_token: manifest.pad_token,
          pad_token_id: manifest.pad_token_id,
          eot_token_ids: manifest.eot_token_ids,
          shards: manifest.shards,
          data_report: reports.train,
          ...(reports.eval ? { eval_data_report: reports.eval } : {}),
        };
        if (opts['json']) printJson(summary);
        else {
          const dropped =
            Object.entries(manifest.dropped)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ') || 'none';
          process.stdout.write(
            `wrote ${manifest.shards.length} shard(s) to ${summary.out}\n` +
              `examples ${manifest.examples}  rows ${manifest.rows}  tokens ${manifest.tokens}  supervised ${manifest.supervised_tokens}\n` +
              `assistant turns ${manifest.assistant_turns}  trained ${manifest.trained_turns}  EOT supervised ${manifest.supervised_eot}/${manifest.trained_turns}\n` +
              `pad ${manifest.pad_token} (${manifest.pad_token_id})  EOT ids ${manifest.eot_token_ids.join(', ') || 'none'}  dropped: ${dropped}\n`,
          );
        }
        if (manifest.trained_turns > 0 && manifest.supervised_eot < manifest.trained_turns) {
          throw new ChatsftError('LABELS_INVARIANT', 'some trained turns have no supervised EOT');
        }
      }),
    );
}
