/**
 * A small terminal line chart, e.g. the loss curve printed after training.
 * Pure: returns lines of text (no ANSI), the caller prints them.
 *
 *   2.91 ┤╮
 *   2.20 ┤╰─╮
 *   1.48 ┤  ╰──╮
 *   0.77 ┤     ╰────
 *        └─────────
 *         1       400
 *
 * Longer series are averaged into `width` columns; non-finite values leave
 * a gap. Drawing follows asciichart: each column connects the previous
 * point's row to its own with corners and a vertical run.
 */

export interface LineChartOptions {
  /** Plot rows (default 10). */
  height?: number;
  /** Maximum plot columns (default 60). */
  width?: number;
  title?: string;
  /** Label of the first and last x values (default 1 and values.length). */
  xStart?: number;
  xEnd?: number;
  /** y-axis label format (default 3 significant digits). */
  format?: (v: number) => string;
  /** Only ASCII characters, for terminals without box drawing. */
  ascii?: boolean;
}

const BOX = { flat: '─', upFrom: '╯', upTo: '╭', downFrom: '╮', downTo: '╰', vertical: '│', axis: '┤', corner: '└' };
const ASCII = { flat: '-', upFrom: '/', upTo: '/', downFrom: '\\', downTo: '\\', vertical: '|', axis: '|', corner: '+' };

/** Mean of each of `width` equal slices, ignoring non-finite values. */
export function resample(values: readonly number[], width: number): number[] {
  if (values.length <= width) return [...values];
  const out: number[] = [];
  for (let c = 0; c < width; c++) {
    const from = Math.floor((c * values.length) / width);
    const to = Math.floor(((c + 1) * values.length) / width);
    let sum = 0;
    let n = 0;
    for (let i = from; i < to; i++) {
      const v = values[i] as number;
      if (Number.isFinite(v)) {
        sum += v;
        n++;
      }
    }
    out.push(n > 0 ? sum / n : NaN);
  }
  return out;
}

const defaultFormat = (v: number): string => {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
};

export function lineChart(values: readonly number[], options: LineChartOptions = {}): string[] {
  const height = Math.max(2, Math.floor(options.height ?? 10));
  const width = Math.max(2, Math.floor(options.width ?? 60));
  const format = options.format ?? defaultFormat;
  const ch = options.ascii ? ASCII : BOX;
  const lines: string[] = options.title ? [options.title] : [];

  const series = resample(values, width);
  const finite = series.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return [...lines, '(no data)'];
  let min = Math.min(...finite);
  let max = Math.max(...finite);
  if (max === min) {
    // A flat series: centre it instead of dividing by zero.
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  // Row 0 is the bottom.
  const rowOf = (v: number): number => Math.round(((v - min) / (max - min)) * (height - 1));
  const grid: string[][] = Array.from({ length: height }, () => Array<string>(series.length).fill(' '));
  const put = (row: number, col: number, c: string): void => {
    (grid[height - 1 - row] as string[])[col] = c;
  };
  let prev: number | null = null;
  series.forEach((v, x) => {
    if (!Number.isFinite(v)) {
      prev = null;
      return;
    }
    const y = rowOf(v);
    if (prev === null || prev === y) {
      put(y, x, ch.flat);
    } else if (y > prev) {
      put(prev, x, ch.upFrom);
      put(y, x, ch.upTo);
      for (let r = prev + 1; r < y; r++) put(r, x, ch.vertical);
    } else {
      put(prev, x, ch.downFrom);
      put(y, x, ch.downTo);
      for (let r = y + 1; r < prev; r++) put(r, x, ch.vertical);
    }
    prev = y;
  });

  const labels = grid.map((_, i) => format(max - (i / (height - 1)) * (max - min)));
  const labelWidth = Math.max(...labels.map((l) => l.length));
  grid.forEach((row, i) => lines.push(`${(labels[i] as string).padStart(labelWidth)} ${ch.axis}${row.join('').trimEnd()}`));
  lines.push(`${' '.repeat(labelWidth)} ${ch.corner}${ch.flat.repeat(series.length)}`);
  const xStart = String(options.xStart ?? 1);
  const xEnd = String(options.xEnd ?? values.length);
  const gap = Math.max(1, series.length - xStart.length - xEnd.length); // xEnd ends under the last column
  lines.push(`${' '.repeat(labelWidth + 2)}${xStart}${' '.repeat(gap)}${xEnd}`);
  return lines;
}
