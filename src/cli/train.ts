// chatsft train --config sft.yaml [--resume]
import type { Command } from 'commander';
import { trainFromConfig } from '../train/from-config.js';
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
    'gradient_checkpointing',
    'output_dir',
  ])
    .option('--resume', 'continue from output_dir/checkpoint')
    .option('--json', 'print the result as JSON')
    .option('--quiet', 'no progress')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (cfg.max_steps === undefined && cfg.epochs === undefined) cfg.epochs = 1;
        const result = await trainFromConfig(cfg, { resume: Boolean(opts['resume']), quiet: Boolean(opts['quiet']) });
        if (opts['json']) {
          printJson(result);
          return;
        }
        const chart = lineChart(result.losses, { height: 8, width: 60, title: 'training loss', xStart: 1, xEnd: result.steps });
        process.stdout.write(
          `${chart.join('\n')}\n` +
            `final loss ${result.finalLoss.toFixed(4)}${result.evalLoss !== null ? `  eval loss ${result.evalLoss.toFixed(4)}` : ''}  ` +
            `${result.tokensPerSecond.toFixed(0)} tokens/s  supervised EOT ${result.supervisedEot}\n` +
            `model folder: ${result.outputDir}\n`,
        );
      }),
    );
}
