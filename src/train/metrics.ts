/** metrics.jsonl (one JSON object per step) and an SVG loss curve. */
import fs from 'node:fs';
import path from 'node:path';
import type { StopRateSummary } from '../eval/stop_rate.js';
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
  /** Stop-rate figures of the evaluation at this step (eval/stop_rate.ts). */
  stop_rate?: number;
  mean_new_tokens?: number;
  runaway_new_turn?: number;
}

/** One point of the stop-rate curve (a metrics line that carries one). */
export interface StopRatePoint {
  step: number;
  stop_rate: number;
  mean_new_tokens: number;
  runaway_new_turn: number;
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
      if (!last)
        throw new ChatsftError('FILE_CORRUPT', 'not a metrics line (only the last line may be torn by a kill)', `${file}:${i + 1}`);
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
  writeFileAtomic(
    file,
    lines
      .filter((l) => l.step <= step)
      .map((l) => JSON.stringify(l) + '\n')
      .join(''),
  );
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

/** The metrics-line fields of a stop-rate summary (none for null or an empty sample). */
export function stopFields(s: StopRateSummary | null): Pick<MetricsLine, 'stop_rate' | 'mean_new_tokens' | 'runaway_new_turn'> {
  if (s === null || s.examples === 0) return {};
  return { stop_rate: s.stop_rate, mean_new_tokens: s.mean_new_tokens, runaway_new_turn: s.runaway_new_turn };
}

export function stopRateCurve(lines: readonly MetricsLine[]): StopRatePoint[] {
  return lines.flatMap((l) =>
    l.stop_rate === undefined
      ? []
      : [{ step: l.step, stop_rate: l.stop_rate, mean_new_tokens: l.mean_new_tokens ?? NaN, runaway_new_turn: l.runaway_new_turn ?? NaN }],
  );
}

/** About five round step values in [0, maxStep] for the x axis. */
export function stepTicks(maxStep: number): number[] {
  const raw = maxStep / 5;
  const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = 0; v <= maxStep; v += step) ticks.push(v);
  return ticks;
}

const fmt = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(3));

/**
 * A self-contained SVG in two panels sharing the step axis: train loss (and
 * eval loss points) on top, the held-out stop rate (0–100%) below, each with
 * labelled step ticks. The stop-rate panel says so when the run measured none.
 */
export function lossCurveSvg(lines: MetricsLine[], width = 640, height = 480): string {
  const pad = { l: 56, r: 16, t: 24, b: 34 };
  const gap = 30;
  const panelH = (height - pad.t - pad.b - gap) / 2;
  const top = { y0: pad.t, y1: pad.t + panelH };
  const bottom = { y0: pad.t + panelH + gap, y1: pad.t + 2 * panelH + gap };
  const train = lines.filter((l) => Number.isFinite(l.loss));
  const evals = lines.filter((l) => l.eval_loss !== undefined && Number.isFinite(l.eval_loss));
  const stops = stopRateCurve(lines).filter((p) => Number.isFinite(p.stop_rate));
  const ys = [...train.map((l) => l.loss), ...evals.map((l) => l.eval_loss!)];
  const maxStep = Math.max(1, ...lines.map((l) => l.step));
  const lo = ys.length ? Math.min(...ys) : 0;
  const hi = ys.length ? Math.max(...ys) : 1;
  const span = hi - lo || 1;
  const x = (s: number): string => (pad.l + ((width - pad.l - pad.r) * s) / maxStep).toFixed(1);
  const yLoss = (v: number): string => (top.y0 + panelH * (1 - (v - lo) / span)).toFixed(1);
  const yStop = (v: number): string => (bottom.y0 + panelH * (1 - v)).toFixed(1);
  const hline = (y: string, label: string): string =>
    `<line x1="${pad.l}" x2="${width - pad.r}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${pad.l - 6}" y="${(Number(y) + 4).toFixed(1)}" text-anchor="end" font-size="11">${label}</text>`;
  const xTicks = (p: { y0: number; y1: number }): string[] =>
    stepTicks(maxStep).map(
      (s) =>
        `<line x1="${x(s)}" x2="${x(s)}" y1="${p.y1}" y2="${p.y1 + 4}" stroke="#444"/><text x="${x(s)}" y="${p.y1 + 15}" text-anchor="middle" font-size="10">${s}</text>`,
    );
  const lossPts = train.map((l) => `${x(l.step)},${yLoss(l.loss)}`).join(' ');
  const stopPts = stops.map((p) => `${x(p.step)},${yStop(p.stop_rate)}`).join(' ');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    // Panel 1: loss.
    ...[0, 0.25, 0.5, 0.75, 1].map((f) => hline(yLoss(lo + f * span), fmt(lo + f * span))),
    `<line x1="${pad.l}" x2="${width - pad.r}" y1="${top.y1}" y2="${top.y1}" stroke="#444"/>`,
    ...xTicks(top),
    `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${lossPts}"/>`,
    evals.map((l) => `<circle cx="${x(l.step)}" cy="${yLoss(l.eval_loss!)}" r="3.5" fill="#d62728"/>`).join(''),
    `<text x="${pad.l}" y="16" font-size="12">train loss (blue)${evals.length ? ', eval loss (red)' : ''}</text>`,
    // Panel 2: stop rate.
    ...[0, 0.25, 0.5, 0.75, 1].map((f) => hline(yStop(f), `${Math.round(f * 100)}%`)),
    `<line x1="${pad.l}" x2="${width - pad.r}" y1="${bottom.y1}" y2="${bottom.y1}" stroke="#444"/>`,
    ...xTicks(bottom),
    stops.length > 1 ? `<polyline fill="none" stroke="#2ca02c" stroke-width="1.5" points="${stopPts}"/>` : '',
    stops.map((p) => `<circle cx="${x(p.step)}" cy="${yStop(p.stop_rate)}" r="3.5" fill="#2ca02c"/>`).join(''),
    `<text x="${pad.l}" y="${bottom.y0 - 8}" font-size="12">${stops.length ? 'stop rate on held-out prompts (green)' : 'stop rate: not measured (eval.samples 0 or no held-out prompts)'}</text>`,
    `<text x="${width / 2}" y="${height - 6}" text-anchor="middle" font-size="12">step</text>`,
    `</svg>`,
    '',
  ].join('\n');
}
