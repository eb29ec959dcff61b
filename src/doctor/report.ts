/**
 * The report for a person: findings grouped by severity, each with its
 * evidence and the fix, then a one-line summary. Colour is the caller's
 * choice (TTY and NO_COLOR are decided in the CLI).
 */
import type { DoctorReport } from './index.js';
import type { EvidenceValue, Finding, Severity } from './types.js';

const STYLE = {
  error: ['\x1b[31m', '✖'],
  warning: ['\x1b[33m', '!'],
  info: ['\x1b[36m', '·'],
} as const satisfies Record<Severity, readonly [string, string]>;
const RESET = '\x1b[0m';
const BOLD = '\x1b[1m';
const DIM = '\x1b[2m';

function show(v: EvidenceValue): string {
  if (v === null) return 'none';
  if (Array.isArray(v)) return v.map(show).join(', ');
  if (typeof v === 'object')
    return Object.entries(v)
      .map(([k, x]) => `${k} ${show(x)}`)
      .join(', ');
  return String(v);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function formatReport(report: DoctorReport, color: boolean): string {
  const paint = (code: string, s: string): string => (color ? `${code}${s}${RESET}` : s);
  const s = report.summary;
  const lines: string[] = [];
  lines.push(paint(BOLD, `chatsft doctor: ${s.model}`));
  lines.push(
    `  template ${s.template} · EOT ${s.eot.join(', ') || 'none found'} · stop ids ${s.stop_ids.join(', ') || 'none'} · pad ${s.pad} (${s.padding_side})`,
  );
  lines.push(`  data ${s.data}`);
  const groups: Array<[Severity, string]> = [
    ['error', 'Errors'],
    ['warning', 'Warnings'],
    ['info', 'Info'],
  ];
  for (const [sev, title] of groups) {
    const list = report.findings.filter((f: Finding) => f.severity === sev);
    if (list.length === 0) continue;
    const [tint, mark] = STYLE[sev];
    lines.push('', paint(tint + BOLD, `${title} (${list.length})`));
    for (const f of list) {
      lines.push(`${paint(tint, mark)} ${paint(BOLD, f.code)}  ${f.message}`);
      // Info lines stay one line each; the JSON output carries their evidence.
      if (sev !== 'info') for (const [k, v] of Object.entries(f.evidence)) lines.push(paint(DIM, `    ${k}: ${show(v)}`));
      if (f.hint) lines.push(`    ${paint(BOLD, 'fix:')} ${f.hint}`);
    }
  }
  lines.push(
    '',
    `${plural(s.errors, 'error')}, ${plural(s.warnings, 'warning')}, ${s.infos} info` +
      (s.errors > 0 ? ' — fix the errors before training' : ' — nothing blocks training'),
  );
  return lines.join('\n') + '\n';
}
