/**
 * `inspect`: a conversation's tokens, trained vs masked, EOT highlighted,
 * as coloured terminal text or a self-contained HTML page.
 */
import fs from 'node:fs';
import type { EncodedExample } from '../labels/encode.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { sliceCodePoints } from '../tokenize/encode.js';

export type TokenKind = 'trained' | 'masked' | 'eot' | 'eot-masked';

export interface TokenView {
  index: number;
  id: number;
  /** The text the token covers in the rendered chat (or its vocabulary string). */
  text: string;
  kind: TokenKind;
}

export interface TurnView {
  messageIndex: number;
  /** `text`, `tool call`, with `+ reasoning` when the turn's reasoning is in the row. */
  kind: string;
  /** Reasoning of this message that the template did not render (not in the row, so not learned). */
  reasoningDropped: boolean;
  /** A token holding header text and the reply's first characters was masked. */
  straddled: boolean;
  /** The closing sequence as token strings. */
  closing: string[];
  trained: boolean;
  tokens: number;
  supervised: number;
  eotId: number;
  eotToken: string;
  eotSupervised: boolean;
}

export interface InspectView {
  line: number;
  tokens: TokenView[];
  turns: TurnView[];
  total: number;
  supervised: number;
}

export function buildView(setup: TokenizerSetup, ex: EncodedExample): InspectView {
  const labelled = ex.example;
  const text = labelled.text;
  const eotAt = new Set(labelled.turns.map((t) => t.eot));
  const tokens: TokenView[] = labelled.inputIds.map((id, i) => {
    const [s, e] = labelled.tokens.span(i);
    const prev = i > 0 ? labelled.tokens.span(i - 1) : undefined;
    const sharesOffsets = prev !== undefined && prev[0] === s && prev[1] === e;
    // Byte-fallback pieces of one character share offsets: show the text once.
    const covered = e > s && !sharesOffsets ? sliceCodePoints(text, s, e) : (setup.tokenizer.idToToken(id) ?? `#${id}`);
    const trained = labelled.labels[i] !== -100;
    const kind: TokenKind = eotAt.has(i) ? (trained ? 'eot' : 'eot-masked') : trained ? 'trained' : 'masked';
    return { index: i, id, text: covered, kind };
  });
  const turns: TurnView[] = labelled.turns.map((t) => {
    let supervised = 0;
    for (let i = t.start; i <= t.eot; i++) if (labelled.labels[i] !== -100) supervised++;
    return {
      messageIndex: t.messageIndex,
      kind: (t.toolCalls ? 'tool call' : 'text') + (t.reasoning ? ' + reasoning' : ''),
      reasoningDropped: t.reasoningDropped,
      straddled: t.straddled,
      closing: t.closing.map((id) => setup.tokenizer.idToToken(id) ?? `#${id}`),
      trained: t.trained,
      tokens: t.eot - t.start + 1,
      supervised,
      eotId: t.eotId,
      eotToken: setup.tokenizer.idToToken(t.eotId) ?? `#${t.eotId}`,
      eotSupervised: labelled.labels[t.eot] !== -100,
    };
  });
  return { line: ex.line, tokens, turns, total: tokens.length, supervised: labelled.labels.filter((l) => l !== -100).length };
}

const ANSI = {
  reset: '\x1b[0m',
  trained: '\x1b[30;42m', // black on green
  trainedAlt: '\x1b[30;102m', // black on light green: shows where adjacent trained tokens meet
  maskedAlt: '\x1b[2;4m', // dim underlined
  masked: '\x1b[2m', // dim
  eot: '\x1b[1;97;45m', // bold white on magenta
  eotMasked: '\x1b[1;97;41m', // bold white on red: an EOT that will not be learned
  sep: '\x1b[90m',
};

function visible(s: string): string {
  return s.replace(/\n/g, '↵\n').replace(/\t/g, '→');
}

/** Terminal rendering; `color` false gives plain text with [[trained]] and {{EOT}} brackets. */
export function renderTerminal(view: InspectView, color: boolean): string {
  const out: string[] = [];
  out.push(`line ${view.line}: ${view.total} tokens, ${view.supervised} trained`);
  out.push(
    color
      ? `legend: ${ANSI.trained}trained${ANSI.reset} ${ANSI.masked}masked${ANSI.reset} ${ANSI.eot}EOT trained${ANSI.reset} ${ANSI.eotMasked}EOT masked${ANSI.reset}`
      : 'legend: [[trained]] masked {{EOT trained}} {!EOT masked!}',
  );
  out.push('');
  let body = '';
  let open: TokenKind | undefined;
  for (const t of view.tokens) {
    const s = visible(t.text);
    if (color) {
      const alt = t.index % 2 === 1;
      const style =
        t.kind === 'trained'
          ? alt
            ? ANSI.trainedAlt
            : ANSI.trained
          : t.kind === 'masked'
            ? alt
              ? ANSI.maskedAlt
              : ANSI.masked
            : t.kind === 'eot'
              ? ANSI.eot
              : ANSI.eotMasked;
      // Colour each line separately so backgrounds do not run across newlines.
      body += s
        .split('\n')
        .map((part) => (part ? `${style}${part}${ANSI.reset}` : ''))
        .join('\n');
    } else {
      if (open === 'trained' && t.kind !== 'trained') body += ']]';
      if (t.kind === 'trained' && open !== 'trained') body += '[[';
      body += t.kind === 'eot' ? `{{${s}}}` : t.kind === 'eot-masked' ? `{!${s}!}` : s;
      open = t.kind;
    }
  }
  if (!color && open === 'trained') body += ']]';
  out.push(body);
  out.push('');
  out.push('turn  message  kind                    trained  tokens  supervised  EOT');
  view.turns.forEach((t, i) => {
    const closing = t.closing.length > 1 ? ` (closing ${t.closing.join('')})` : '';
    const eot = `${t.eotToken} (${t.eotId}) ${t.eotSupervised ? 'supervised' : 'MASKED'}${closing}`;
    out.push(
      `${String(i + 1).padEnd(6)}${String(t.messageIndex).padEnd(9)}${t.kind.padEnd(24)}${(t.trained ? 'yes' : 'no').padEnd(9)}${String(t.tokens).padEnd(8)}${String(t.supervised).padEnd(12)}${eot}`,
    );
  });
  for (const t of view.turns) {
    if (t.reasoningDropped)
      out.push(`message ${t.messageIndex}: its reasoning was dropped by the template (not in this row, so not learned)`);
    if (t.straddled)
      out.push(
        `message ${t.messageIndex}: the first token joins header and reply text; it is masked and supervision starts at the next token`,
      );
  }
  return out.join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The second line of every page `inspect --html` writes: --overwrite replaces only such a page. */
export const HTML_MARKER = '<!-- generator: chatsft inspect -->';

/** Why the file at `file` is not a page inspect wrote (null when it is). */
export function notInspectPage(file: string): string | null {
  const buf = Buffer.alloc(256);
  const fd = fs.openSync(file, 'r');
  let n = 0;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  return buf.subarray(0, n).toString('utf8').includes(HTML_MARKER)
    ? null
    : `not a page written by chatsft inspect (no ${HTML_MARKER} at its top)`;
}

/** A self-contained HTML page of one or more views. */
export function renderHtml(views: InspectView[], title: string): string {
  const sections = views
    .map((v) => {
      const toks = v.tokens
        .map((t) => `<span class="${t.kind}" title="#${t.index} id ${t.id}">${esc(t.text).replace(/\n/g, '↵<br>')}</span>`)
        .join('');
      const rows = v.turns
        .map(
          (t, i) =>
            `<tr><td>${i + 1}</td><td>${t.messageIndex}</td><td>${esc(t.kind)}${t.reasoningDropped ? ' (reasoning dropped by the template)' : ''}</td><td>${t.trained ? 'yes' : 'no'}</td><td>${t.tokens}</td><td>${t.supervised}</td><td class="${
              t.eotSupervised ? 'ok' : 'bad'
            }">${esc(t.eotToken)} (${t.eotId}) ${t.eotSupervised ? 'supervised' : 'masked'}</td></tr>`,
        )
        .join('');
      return `<section><h2>line ${v.line}: ${v.total} tokens, ${v.supervised} trained</h2><div class="toks">${toks}</div>
<table><tr><th>turn</th><th>message</th><th>kind</th><th>trained</th><th>tokens</th><th>supervised</th><th>EOT</th></tr>${rows}</table></section>`;
    })
    .join('\n');
  return `<!doctype html>
${HTML_MARKER}
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
.toks{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.9;border:1px solid #ccc;padding:1em}
.toks span{border-right:1px solid #fff;padding:1px 0}
.trained{background:#b7f0b1}.masked{color:#888}.eot{background:#a020a0;color:#fff;font-weight:bold}.eot-masked{background:#d00;color:#fff;font-weight:bold}
table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;padding:2px 8px}.ok{color:#070}.bad{color:#d00;font-weight:bold}
</style></head><body><h1>${esc(title)}</h1>
<p>Legend: <span class="trained">trained</span> <span class="masked">masked</span> <span class="eot">EOT trained</span> <span class="eot-masked">EOT masked</span>. Hover a token for its index and id.</p>
${sections}
</body></html>
`;
}
