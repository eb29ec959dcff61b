// chatsft train --config sft.yaml [--resume] [--engine torch [--nproc 2] [--python /usr/bin/python3]]
import { Option, type Command } from 'commander';
import { ChatsftError } from '../errors.js';
import type { TorchEngineOptions } from '../torch/from-config.js';
import { trainFromConfig } from '../train/from-config.js';
import type { TrainResult } from '../train/types.js';
import { lineChart } from '../util/termchart.js';
import { action, addConfigFlags, configFrom, printJson } from './common.js';
import { PIPELINE_KEYS } from './prepare.js';

export function registerTrain(program: Command): void {
  const cmd = program.command('train').description('fine-tune (full or LoRA) with the embedded engine; writes a complete model folder');
  addConfigFlags(cmd, [
    ...PIPELINE_KEYS,
    'model_config',
    'lora',
    'lr',
    'weight_decay',
    'warmup_steps',
    'schedule',
    'max_grad_norm',
    'batch_size',
    'grad_accum',
    'epochs',
    'max_steps',
    'seed',
    'eval',
    'checkpoint_every',
    'allow_no_eot',
    'allow_extra_tensors',
    'output_dir',
  ])
    .option('--resume', 'continue the run in output_dir from its newest complete checkpoint')
    .option('--overwrite', 'replace an earlier chatsft run in output_dir (once the new run succeeds; anything else is refused)')
    .addOption(
      new Option('--engine <name>', 'embedded (TensorFlow.js, default) or torch (PyTorch worker: GPU, several processes)')
        .choices(['embedded', 'torch'])
        .default('embedded'),
    )
    .option('--nproc <n>', 'torch: processes (DistributedDataParallel; the global batch is batch_size × n)')
    .option('--python <path>', 'torch: the Python interpreter with PyTorch (default /usr/bin/python3, or CHATSFT_PYTHON)')
    .addOption(new Option('--device <kind>', 'torch: auto (CUDA when available), cuda or cpu').choices(['auto', 'cuda', 'cpu']))
    .option('--gradient-checkpointing', 'torch: recompute each layer in the backward (less activation memory)')
    .option('--json', 'print the result as JSON')
    .option('--quiet', 'no progress')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (cfg.max_steps === undefined && cfg.epochs === undefined) cfg.epochs = 1;
        const result = await trainFromConfig(cfg, {
          resume: Boolean(opts['resume']),
          overwrite: Boolean(opts['overwrite']),
          quiet: Boolean(opts['quiet']),
          ...engineOptions(opts),
        });
        if (opts['json']) {
          printJson(result);
          return;
        }
        const chart = lineChart(result.losses, { height: 8, width: 60, title: 'training loss', xStart: 1, xEnd: result.steps });
        process.stdout.write(
          `${chart.join('\n')}\n` +
            `final loss ${result.finalLoss.toFixed(4)}${result.evalLoss !== null ? `  eval loss ${result.evalLoss.toFixed(4)}` : ''}  ` +
            `${result.tokensPerSecond.toFixed(0)} tokens/s  supervised EOT ${result.supervisedEot}\n` +
            `${result.resumedFrom !== null ? `resumed from step ${result.resumedFrom} (${result.outputDir}/checkpoint)\n` : ''}` +
            stopRateReport(result) +
            `model folder: ${result.outputDir}\n`,
        );
      }),
    );
}

/** --engine and the torch flags; torch flags without --engine torch are a usage error. */
export function engineOptions(opts: Record<string, unknown>): { engine: 'embedded' | 'torch'; torch?: TorchEngineOptions } {
  const engine = opts['engine'] === 'torch' ? 'torch' : 'embedded';
  const torchFlags = ['nproc', 'python', 'device', 'gradientCheckpointing'].filter((k) => opts[k] !== undefined);
  if (engine !== 'torch') {
    if (torchFlags.length > 0)
      throw new ChatsftError('USAGE', `--${torchFlags[0]!.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} needs --engine torch`);
    return { engine };
  }
  const t: TorchEngineOptions = {};
  if (opts['nproc'] !== undefined) {
    const n = Number(opts['nproc']);
    if (!Number.isInteger(n) || n < 1) throw new ChatsftError('USAGE', `--nproc must be an integer >= 1, got ${String(opts['nproc'])}`);
    t.nproc = n;
  }
  if (typeof opts['python'] === 'string') t.python = opts['python'];
  if (typeof opts['device'] === 'string') t.device = opts['device'] as 'auto' | 'cuda' | 'cpu';
  if (opts['gradientCheckpointing']) t.gradientCheckpointing = true;
  return { engine, torch: t };
}

/** "stop rate 0% → 12% → 94% (steps 0, 50, 100)"; empty when the run measured none. */
function stopRateReport(result: TrainResult): string {
  const points = [...(result.stopRateAtStart != null ? [{ step: 0, stop_rate: result.stopRateAtStart }] : []), ...result.stopRates];
  if (points.length === 0) return '';
  const pct = (x: number): string => `${Math.round(x * 100)}%`;
  const last = result.stopRates[result.stopRates.length - 1];
  const tail = last ? `  mean new tokens ${last.mean_new_tokens.toFixed(1)}  runaway into a new turn ${pct(last.runaway_new_turn)}` : '';
  return (
    `stop rate on held-out prompts ${points.map((p) => pct(p.stop_rate)).join(' → ')} (step ${points.map((p) => p.step).join(', ')})${tail}\n` +
    (result.stopRateWarning ? `${result.stopRateWarning}\n` : '')
  );
}
