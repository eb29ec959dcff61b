/**
 * The one parser for the numeric flags that are not config keys
 * (`--shard-rows`, `--samples`, `--max-new-tokens`, ...): strict syntax
 * (`abc`, `''`, `0x10`, `3.5` for an integer are refused, `1e3` is 1000),
 * range checks, and an error that names the flag. Config keys go through the
 * zod schema instead. Also where a command's data report reaches stderr.
 */
import { ChatsftError } from '../errors.js';
import { formatDataReport, type DataReport } from '../data/report.js';

export interface Range {
  min?: number;
  max?: number;
}

const INT = /^[+-]?\d+(e\+?\d+)?$/i;
const NUM = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function range(r: Range): string {
  if (r.min !== undefined && r.max !== undefined) return ` from ${r.min} to ${r.max}`;
  if (r.min !== undefined) return ` >= ${r.min}`;
  if (r.max !== undefined) return ` <= ${r.max}`;
  return '';
}

/** An integer flag value; `--flag` names it in the error. */
export function intFlag(raw: unknown, flag: string, r: Range = {}): number {
  const s = String(raw).trim();
  const n = Number(s);
  const ok = INT.test(s) && Number.isSafeInteger(n) && (r.min === undefined || n >= r.min) && (r.max === undefined || n <= r.max);
  if (!ok) throw new ChatsftError('USAGE', `--${flag} must be an integer${range(r)}, got '${String(raw)}'`);
  return n;
}

/** A number flag value (finite). */
export function numFlag(raw: unknown, flag: string, r: Range & { above?: number } = {}): number {
  const s = String(raw).trim();
  const n = Number(s);
  const ok =
    NUM.test(s) &&
    Number.isFinite(n) &&
    (r.min === undefined || n >= r.min) &&
    (r.max === undefined || n <= r.max) &&
    (r.above === undefined || n > r.above);
  if (!ok) {
    const what = r.above !== undefined ? ` > ${r.above}${r.max !== undefined ? ` and <= ${r.max}` : ''}` : range(r);
    throw new ChatsftError('USAGE', `--${flag} must be a number${what}, got '${String(raw)}'`);
  }
  return n;
}

/** An optional integer flag: the default when absent. */
export function optInt(opts: Record<string, unknown>, key: string, flag: string, fallback: number, r: Range = {}): number {
  return opts[key] === undefined ? fallback : intFlag(opts[key], flag, r);
}

/** The data report on stderr: first problems, a count of the rest, the summary by reason. */
export function printDataReport(report: DataReport, opts: { quiet?: boolean; shown?: number; verb?: string } = {}): void {
  if (opts.quiet) return;
  const lines = formatDataReport(report, opts.shown ?? 10, opts.verb);
  if (lines.length) process.stderr.write(lines.map((l) => `warning: ${l}`).join('\n') + '\n');
}
