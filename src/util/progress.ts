/**
 * Progress for long commands (prepare, train, eval, demo), always on stderr
 * so that `--json` output on stdout stays clean.
 *
 * On a TTY: one line redrawn in place
 *   train  37/100  37% [#######-------------]  2.31 steps/s  850 tok/s  ETA 0:27  0:16  loss 2.31
 * Otherwise (CI logs, pipes): a plain line every `intervalMs` (5 s) or every
 * 10% of the total, whichever comes first; `status` (progress inside an
 * item) only every `intervalMs`. ANSI sequences only on a TTY
 * without NO_COLOR (https://no-color.org) and TERM != dumb; a TTY without
 * colour still redraws, with '\r' and space padding only.
 *
 *   const p = createProgress({ label: 'train', total: steps, unit: 'steps' });
 *   p.tick(1, { tokens: 4096, info: `loss ${loss.toFixed(3)}` });
 *   p.done();
 */

/** The part of a writable stream the reporter needs (process.stderr fits). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  label: string;
  /** Number of items expected; omit when unknown (no %, bar or ETA). */
  total?: number;
  /** Item name in rates, e.g. 'steps', 'examples'. Default 'it'. */
  unit?: string;
  stream?: ProgressStream;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
  env?: Readonly<Record<string, string | undefined>>;
  /** Plain-line period when not a TTY. Default 5000 ms. */
  intervalMs?: number;
  /** Minimum time between redraws on a TTY. Default 100 ms. */
  redrawMs?: number;
  /** Write nothing at all (e.g. `--quiet`). */
  silent?: boolean;
}

export interface TickExtra {
  /** Tokens processed by this tick; adds a tok/s rate. */
  tokens?: number;
  /** Free text shown at the end of the line (e.g. the current loss). */
  info?: string;
}

export interface Progress {
  /** Adds `n` (default 1) finished items. */
  tick(n?: number, extra?: TickExtra): void;
  /** Sets the absolute number of finished items. */
  update(done: number, extra?: TickExtra): void;
  /**
   * Where the current item is (e.g. `step 1/10 · backward layer 12/24`),
   * shown after the info until the next tick/update. Called as often as
   * wanted: a TTY redraws at most every `redrawMs`, plain output prints a
   * line at most every `intervalMs`.
   */
  status(text: string): void;
  /** Prints a whole line without breaking the bar. */
  log(line: string): void;
  /** Final line (always printed unless silent); later calls are ignored. */
  done(message?: string): void;
  /** Seconds since creation. */
  elapsed(): number;
  /** Set the total once it is known (e.g. after the data is loaded). */
  setTotal(n: number): void;
}

/** 75 -> "1:15", 3725 -> "1:02:05". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Three significant-ish digits: 0.0123, 2.31, 45.6, 1234. */
export function formatRate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return '-';
  if (perSecond >= 100) return String(Math.round(perSecond));
  if (perSecond >= 10) return perSecond.toFixed(1);
  if (perSecond >= 0.1) return perSecond.toFixed(2);
  return perSecond.toPrecision(2);
}

/** Whole counts as they are; fractional ones (e.g. MB read) to one decimal. */
export function formatCount(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function bar(fraction: number, width: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return '[' + '#'.repeat(filled) + '-'.repeat(width - filled) + ']';
}

export function createProgress(options: ProgressOptions): Progress {
  const stream: ProgressStream = options.stream ?? process.stderr;
  const env = options.env ?? process.env;
  const now = options.now ?? (() => performance.now());
  const unit = options.unit ?? 'it';
  let total = options.total !== undefined && options.total > 0 ? options.total : undefined;
  const tty = stream.isTTY === true;
  const ansi = tty && !env['NO_COLOR'] && env['TERM'] !== 'dumb';
  const intervalMs = options.intervalMs ?? 5000;
  const redrawMs = options.redrawMs ?? 100;
  const started = now();

  let count = 0;
  let tokens = 0;
  let info = '';
  let detail = ''; // progress inside the current item; cleared when it finishes
  let finished = false;
  let lastDraw = -Infinity;
  let lastDrawnWidth = 0; // to blank the rest of the line without ANSI
  let lastLineAt = started;
  let lastDecile = 0;
  let drawn = false; // a bar is on screen (TTY)

  const describe = (withBar: boolean, final: boolean): string => {
    const secs = (now() - started) / 1000;
    const parts = [options.label, total !== undefined ? `${formatCount(count)}/${formatCount(total)}` : `${formatCount(count)} ${unit}`];
    if (total !== undefined) {
      parts.push(`${Math.floor((100 * count) / total)}%`);
      if (withBar) parts.push(bar(count / total, 20));
    }
    if (secs > 0 && count > 0) parts.push(`${formatRate(count / secs)} ${unit}/s`);
    if (secs > 0 && tokens > 0) parts.push(`${formatRate(tokens / secs)} tok/s`);
    if (!final && total !== undefined && count > 0 && count < total) {
      parts.push(`ETA ${formatDuration(((total - count) * secs) / count)}`);
    }
    parts.push(final ? `done in ${formatDuration(secs)}` : formatDuration(secs));
    if (info) parts.push(info);
    if (detail && !final) parts.push(detail);
    return parts.join('  ');
  };

  const fit = (line: string): string => {
    const width = (stream.columns ?? 80) - 1; // a full-width line would wrap on some terminals
    return line.length > width ? line.slice(0, Math.max(0, width)) : line;
  };

  const clearLine = (): string => (ansi ? '\r\x1b[K' : '\r' + ' '.repeat(lastDrawnWidth) + '\r');

  const drawTty = (final: boolean): void => {
    const line = fit(describe(true, final));
    const pad = ansi ? '\x1b[K' : ' '.repeat(Math.max(0, lastDrawnWidth - line.length));
    stream.write('\r' + line + pad + (final ? '\n' : ''));
    lastDrawnWidth = line.length;
    drawn = !final;
    lastDraw = now();
  };

  const maybeReport = (): void => {
    if (options.silent || finished) return;
    const t = now();
    if (tty) {
      if (t - lastDraw >= redrawMs) drawTty(false);
      return;
    }
    const decile = total !== undefined ? Math.floor((10 * count) / total) : 0;
    if (t - lastLineAt >= intervalMs || decile > lastDecile) {
      stream.write(describe(false, false) + '\n');
      lastLineAt = t;
      lastDecile = decile;
    }
  };

  const apply = (extra: TickExtra | undefined): void => {
    detail = '';
    if (extra?.tokens !== undefined) tokens += extra.tokens;
    if (extra?.info !== undefined) info = extra.info;
  };

  return {
    tick(n = 1, extra) {
      count += n;
      apply(extra);
      maybeReport();
    },
    update(doneItems, extra) {
      count = doneItems;
      apply(extra);
      maybeReport();
    },
    status(text) {
      detail = text;
      if (options.silent || finished) return;
      const t = now();
      // Plain output: time-based only (no decile moves within an item), so a tick per layer cannot flood a log.
      if (tty) maybeReport();
      else if (t - lastLineAt >= intervalMs) {
        stream.write(describe(false, false) + '\n');
        lastLineAt = t;
      }
    },
    log(line) {
      if (options.silent) return;
      if (tty && drawn) {
        stream.write(clearLine() + line + '\n');
        drawn = false;
        lastDrawnWidth = 0;
        if (!finished) drawTty(false);
      } else {
        stream.write(line + '\n');
      }
    },
    done(message) {
      if (finished) return;
      if (!options.silent) {
        if (message !== undefined) info = message;
        if (tty) drawTty(true);
        else stream.write(describe(false, true) + '\n');
      }
      finished = true;
    },
    setTotal(n) {
      total = n > 0 ? n : undefined;
    },
    elapsed() {
      return (now() - started) / 1000;
    },
  };
}
