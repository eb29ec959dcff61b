/**
 * The demo's printed table: one row per run, the numbers of SPEC §8.
 *
 *   run                supervised EOT  final loss  stop rate  mean new tokens  seconds
 *   legacy                          0      0.0888       0.0%             64.0     91.7
 */
import type { DemoReport, DemoRun } from './run.js';

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

function stopCell(r: DemoRun): string {
  return r.stop_rate_before !== undefined ? `${pct(r.stop_rate_before)} → ${pct(r.stop_rate)}` : pct(r.stop_rate);
}

export function formatDemoTable(report: DemoReport): string {
  const head = ['run', 'task', 'supervised EOT', 'final loss', 'stop rate', 'mean new tokens', 'train s'];
  const rows = report.runs.map((r) => [
    r.name,
    r.task,
    String(r.supervised_eot),
    r.final_loss.toFixed(4),
    stopCell(r),
    r.mean_new_tokens.toFixed(1),
    r.seconds.toFixed(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
  const s = report.settings;
  return [
    `model: llama, hidden ${s.hiddenSize}, ${s.layers} layers, ${s.parameters} parameters, vocab ${s.vocabSize}; ` +
      `${s.trainSize} training conversations, ${s.steps} steps of ${s.batchSize}, lr ${s.lr}, seed ${s.seed}` +
      (s.engine === 'torch' ? '; trained with --engine torch' : ''),
    `evaluation: ${report.heldout_examples} held-out prompts per task, greedy, max_new_tokens ${s.maxNewTokens}, stop ids ${s.stop_ids.join(', ')}`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    ...report.verdict,
    '',
  ].join('\n');
}
