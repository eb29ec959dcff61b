// chatsft demo [--out demo/] [--json] [--quick] [--no-continued] [--engine torch]
import { Option, type Command } from 'commander';
import { engineOptions } from './train.js';
import { ChatsftError } from '../errors.js';
import { DEMO_DEFAULTS, runDemo, type DemoOptions } from '../demo/run.js';
import { formatDemoTable } from '../demo/report.js';
import { formatDuration } from '../util/progress.js';
import { action, printJson } from './common.js';
import { intFlag, numFlag } from './flags.js';

/** Reduced size for CI: same mechanism, fewer steps and prompts. */
export const DEMO_QUICK: Partial<DemoOptions> = {
  trainSize: 400,
  heldout: 24,
  steps: 120,
  maxNewTokens: 32,
  continued: false,
};

const int = (raw: unknown, flag: string, min: number): number => intFlag(raw, flag, { min });

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('train one small model twice (legacy pad = eos labels vs chatsft labels) and measure how often each stops')
    .option('--out <dir>', 'keep the data, both model folders and report.json here')
    .option('--overwrite', 'replace an earlier demo --out folder (only one the demo wrote; anything else is refused)')
    .option('--json', 'print {"runs": [...]} as JSON on stdout')
    .option('--quick', 'reduced size (CI): fewer conversations, steps and prompts, no continued pair')
    .option('--full', 'also run the forgetting pair (legacy-continued, chatsft-continued) even with --quick')
    .option('--no-continued', 'skip the forgetting pair')
    .option('--steps <n>', `training steps per run (default ${DEMO_DEFAULTS.steps})`)
    .option('--train-size <n>', `training conversations (default ${DEMO_DEFAULTS.trainSize})`)
    .option('--heldout <n>', `held-out prompts per task (default ${DEMO_DEFAULTS.heldout})`)
    .option('--lr <x>', `peak learning rate (default ${DEMO_DEFAULTS.lr})`)
    .option('--max-new-tokens <n>', `generation budget (default ${DEMO_DEFAULTS.maxNewTokens})`)
    .option('--seed <n>', `seed for data, init and order (default ${DEMO_DEFAULTS.seed})`)
    .option('--quiet', 'no progress on stderr')
    .addOption(
      new Option('--engine <name>', 'training engine: embedded (default) or torch (the PyTorch worker)')
        .choices(['embedded', 'torch'])
        .default('embedded'),
    )
    .option('--nproc <n>', 'torch: processes (DDP); the global batch is the demo batch × n')
    .option('--python <path>', 'torch: the Python interpreter with PyTorch')
    .addOption(new Option('--device <kind>', 'torch: auto, cuda or cpu').choices(['auto', 'cuda', 'cpu']))
    .action(
      action(async (opts: Record<string, unknown>) => {
        const quiet = Boolean(opts['quiet']);
        const o: DemoOptions = { ...DEMO_DEFAULTS, ...(opts['quick'] ? DEMO_QUICK : {}) };
        if (opts['steps'] !== undefined) o.steps = int(opts['steps'], 'steps', 1);
        if (opts['trainSize'] !== undefined) o.trainSize = int(opts['trainSize'], 'train-size', 1);
        if (opts['heldout'] !== undefined) o.heldout = int(opts['heldout'], 'heldout', 1);
        if (opts['maxNewTokens'] !== undefined) o.maxNewTokens = int(opts['maxNewTokens'], 'max-new-tokens', 1);
        if (opts['lr'] !== undefined) {
          o.lr = numFlag(opts['lr'], 'lr', { above: 0 });
        }
        if (opts['seed'] !== undefined) o.seed = int(opts['seed'], 'seed', 0);
        if (opts['full']) o.continued = true;
        if (opts['continued'] === false) o.continued = false;
        if (typeof opts['out'] === 'string') o.out = opts['out'];
        if (opts['overwrite']) o.overwrite = true;
        const eng = engineOptions(opts);
        o.engine = eng.engine;
        if (eng.torch) o.torch = eng.torch;
        o.progress = !quiet;
        const t0 = performance.now();
        o.onStage = (line) => {
          if (!quiet) process.stderr.write(`${formatDuration((performance.now() - t0) / 1000)} ${line}\n`);
        };
        const report = await runDemo(o);
        if (opts['json']) {
          printJson({
            runs: report.runs.map((r) => ({
              name: r.name,
              supervised_eot: r.supervised_eot,
              stop_rate: r.stop_rate,
              mean_new_tokens: r.mean_new_tokens,
              final_loss: r.final_loss,
              seconds: r.seconds,
              ...(r.stop_rate_before !== undefined ? { stop_rate_before: r.stop_rate_before } : {}),
              stop_rate_curve: r.stop_rate_curve.map((p) => ({ step: p.step, stop_rate: p.stop_rate })),
              ...(r.stop_rate_warning ? { warning: r.stop_rate_warning } : {}),
              task: r.task,
            })),
            total_seconds: report.total_seconds,
            ...(report.out ? { out: report.out } : {}),
          });
          return;
        }
        process.stdout.write(formatDemoTable(report));
        for (const r of report.runs) if (r.stop_rate_warning) process.stdout.write(`${r.name}: ${r.stop_rate_warning}\n`);
        process.stdout.write(
          `total time ${formatDuration(report.total_seconds)} (${report.total_seconds.toFixed(1)} s)${report.out ? `; files in ${report.out}` : ''}\n`,
        );
      }),
    );
}
