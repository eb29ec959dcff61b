/**
 * The one report of what happened to the lines of a data file, shared by
 * every command that reads conversations (prepare, train, eval, generate
 * --data, inspect, doctor): the first problems as `file:line field: problem`,
 * the rest counted, and the dropped lines counted by reason. Commands print
 * it on stderr (`formatDataReport`) and put it in their `--json` output.
 */

export interface DataReport {
  file: string;
  /** Lines read, blank ones included. */
  lines: number;
  /** Lines that became an example (or a prompt). */
  used: number;
  /** Lines left out, by reason (invalid, invalid_utf8, too_long, special_tokens_in_content, ...). */
  dropped: Record<string, number>;
  /** The first problems, `file:line field: problem`. */
  issues: string[];
  /** Problems not listed in `issues`. */
  issues_omitted: number;
}

/** Problems kept for the report; the rest are only counted. */
export const MAX_ISSUES = 50;

export interface DataReporter {
  readonly report: DataReport;
  /** A line left out: counted under `reason` and listed as `file:line field: problem`. */
  drop(line: number, reason: string, field: string, problem: string): string;
  use(): void;
  seen(line: number): void;
}

export function dataReporter(file: string, onIssue?: (message: string) => void): DataReporter {
  const report: DataReport = { file, lines: 0, used: 0, dropped: {}, issues: [], issues_omitted: 0 };
  return {
    report,
    drop(line, reason, field, problem) {
      report.dropped[reason] = (report.dropped[reason] ?? 0) + 1;
      const message = `${file}:${line} ${field}: ${problem}`;
      if (report.issues.length < MAX_ISSUES) report.issues.push(message);
      else report.issues_omitted++;
      onIssue?.(message);
      return message;
    },
    use() {
      report.used++;
    },
    seen(line) {
      report.lines = Math.max(report.lines, line);
    },
  };
}

export function totalDropped(r: Pick<DataReport, 'dropped'>): number {
  return Object.values(r.dropped).reduce((a, b) => a + b, 0);
}

/** "invalid 15, too_long 2" (largest first), or "none". */
export function droppedByReason(dropped: Record<string, number>): string {
  const e = Object.entries(dropped).sort((a, b) => b[1] - a[1]);
  return e.length ? e.map(([k, v]) => `${k} ${v}`).join(', ') : 'none';
}

/** One summary line: "data.jsonl: 17 of 19 lines dropped (invalid 15, too_long 2)". */
export function dataSummary(r: DataReport, verb = 'dropped'): string {
  const n = totalDropped(r);
  return `${r.file}: ${n} of ${r.lines} line(s) ${verb} (${droppedByReason(r.dropped)}); ${r.used} used`;
}

/**
 * Report lines for stderr: the first `shown` problems, a count of the rest,
 * and the summary. Empty when nothing was dropped.
 */
export function formatDataReport(r: DataReport, shown = 10, verb = 'dropped'): string[] {
  if (totalDropped(r) === 0) return [];
  // In file order (lines dropped while encoding are found a chunk later than parse errors).
  const lineOf = (m: string): number => Number.parseInt(m.slice(r.file.length + 1), 10) || 0;
  const lines = [...r.issues].sort((a, b) => lineOf(a) - lineOf(b)).slice(0, shown);
  const more = r.issues.length - lines.length + r.issues_omitted;
  if (more > 0) lines.push(`... and ${more} more`);
  lines.push(dataSummary(r, verb));
  return lines;
}
