/** metrics.jsonl (one JSON object per step) and an SVG loss curve. */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';

export interface MetricsLine {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens: number;
  tokens_per_s: number;
  epoch: number;
  eval_loss?: number;
}

export const METRICS_FILE = 'metrics.jsonl';

/**
 * The lines of metrics.jsonl. A kill during an append can leave a torn last
 * line: it is dropped (and `torn` says so); a bad line before the end is
 * corruption and an error naming file:line.
 */
function parseMetrics(file: string): { lines: MetricsLine[]; torn: string | null } {
  const text = fs.readFileSync(file, 'utf8');
  const raw = text.split('\n');
  const lines: MetricsLine[] = [];
  let torn: string | null = null;
  raw.forEach((l, i) => {
    if (l.trim() === '') return;
    try {
      const o = JSON.parse(l) as MetricsLine;
      if (typeof o !== 'object' || o === null || typeof o.step !== 'number') throw new Error('no step');
      lines.push(o);
    } catch {
      const last = raw.slice(i + 1).every((r) => r.trim() === '');
      if (!last) throw new ChatsftError('FILE_CORRUPT', 'not a metrics line (only the last line may be torn by a kill)', `${file}:${i + 1}`);
      torn = `${file}:${i + 1}: dropped a torn last line (${l.length} bytes) left by an interrupted run`;
    }
  });
  return { lines, torn };
}

/** Keep only lines up to `step` (a resumed run rewrites what came after its checkpoint); returns a note on a dropped torn line. */
export function truncateMetrics(outputDir: string, step: number): string | null {
  const file = path.join(outputDir, METRICS_FILE);
  if (!fs.existsSync(file)) return null;
  const { lines, torn } = parseMetrics(file);
  writeFileAtomic(file, lines.filter((l) => l.step <= step).map((l) => JSON.stringify(l) + '\n').join(''));
  return torn;
}

export function appendMetrics(outputDir: string, line: MetricsLine): void {
  fs.appendFileSync(path.join(outputDir, METRICS_FILE), JSON.stringify(line) + '\n');
}

export function readMetrics(outputDir: string): MetricsLine[] {
  const file = path.join(outputDir, METRICS_FILE);
  if (!fs.existsSync(file)) return [];
  return parseMetrics(file).lines;
}

/** A self-contained SVG of train loss per step (and eval loss points). */
export function lossCurveSvg(lines: MetricsLine[], width = 640, height = 360): string {
  const pad = { l: 56, r: 16, t: 24, b: 40 };
  const train = lines.filter((l) => Number.isFinite(l.loss));
  const evals = lines.filter((l) => l.eval_loss !== undefined && Number.isFinite(l.eval_loss));
  const ys = [...train.map((l) => l.loss), ...evals.map((l) => l.eval_loss!)];
  const maxStep = Math.max(1, ...lines.map((l) => l.step));
  const lo = ys.length ? Math.min(...ys) : 0;
  const hi = ys.length ? Math.max(...ys) : 1;
  const span = hi - lo || 1;
  const x = (s: number) => pad.l + ((width - pad.l - pad.r) * s) / maxStep;
  const y = (v: number) => pad.t + (height - pad.t - pad.b) * (1 - (v - lo) / span);
  const pts = train.map((l) => `${x(l.step).toFixed(1)},${y(l.loss).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = lo + f * span;
    return `<line x1="${pad.l}" x2="${width - pad.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/><text x="${pad.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${v.toFixed(3)}</text>`;
  });
  const evalDots = evals.map((l) => `<circle cx="${x(l.step).toFixed(1)}" cy="${y(l.eval_loss!).toFixed(1)}" r="3.5" fill="#d62728"/>`).join('');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...ticks,
    `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${pts}"/>`,
    evalDots,
    `<text x="${width / 2}" y="${height - 8}" text-anchor="middle" font-size="12">step (max ${maxStep})</text>`,
    `<text x="${pad.l}" y="16" font-size="12">train loss (blue)${evals.length ? ', eval loss (red)' : ''}</text>`,
    `</svg>`,
    '',
  ].join('\n');
}
