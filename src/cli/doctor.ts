// chatsft doctor --model ./mistral --data chats.jsonl --pad eos --simulate hf-lm-collator [--engine torch] [--json]
import { Option, type Command } from 'commander';
import { ChatsftError } from '../errors.js';
import { COLLATORS, formatReport, runDoctor, type CollatorName } from '../doctor/index.js';
import { action, addConfigFlags, configFrom, printJson, useColor } from './common.js';
import { PIPELINE_KEYS } from './prepare.js';
import { printDataReport } from './flags.js';

function parseSimulate(value: unknown): CollatorName[] {
  const names = String(value ?? 'chatsft')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names) {
    if (!(COLLATORS as readonly string[]).includes(n)) {
      throw new ChatsftError('USAGE', `--simulate: unknown collator '${n}' (expected ${COLLATORS.join(', ')})`);
    }
  }
  if (names.length === 0) throw new ChatsftError('USAGE', '--simulate: give at least one collator');
  return [...new Set(names)] as CollatorName[];
}

export function registerDoctor(program: Command): void {
  const cmd = program.command('doctor').description('audit a model, template, settings and data for every known cause of "never stops"');
  addConfigFlags(cmd, [...PIPELINE_KEYS, 'lora', 'batch_size'])
    .option('--simulate <names>', `collators whose labels to simulate, comma-separated: ${COLLATORS.join(', ')}`, 'chatsft')
    .option('--json', 'print {findings, summary} as JSON on stdout')
    .addOption(
      new Option('--engine <name>', 'also check a training engine: torch (python, torch version, device, bf16)').choices([
        'embedded',
        'torch',
      ]),
    )
    .option('--python <path>', 'with --engine torch: the interpreter to check (default /usr/bin/python3, or CHATSFT_PYTHON)')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const simulate = parseSimulate(opts['simulate']);
        if (opts['python'] !== undefined && opts['engine'] !== 'torch') throw new ChatsftError('USAGE', '--python needs --engine torch');
        const engine =
          opts['engine'] === 'torch'
            ? { name: 'torch' as const, ...(typeof opts['python'] === 'string' ? { python: opts['python'] } : {}) }
            : undefined;
        const report = await runDoctor({ config: configFrom(opts), simulate, ...(engine ? { engine } : {}) });
        for (const r of Object.values(report.data_reports ?? {})) printDataReport(r, { verb: 'would be dropped' });
        if (opts['json']) printJson(report);
        else process.stdout.write(formatReport(report, useColor(process.stdout)));
        // SPEC §2: 1 when the command ran and found errors.
        return report.summary.errors > 0 ? 1 : 0;
      }),
    );
}
