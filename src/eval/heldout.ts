/**
 * Held-out prompts for the stop rate measured during training, taken from
 * labelled rows (a prepared eval split, or a slice of the training rows):
 * the prompt of a row is everything before its last supervised run, i.e. the
 * conversation up to and including the last assistant turn's header, which
 * is what `add_generation_prompt` renders for the same messages. Working on
 * rows means a prepared folder (no conversations left, only ids) works too.
 */
import { IGNORE_INDEX, type Row } from '../batch/types.js';

/** Prompt ids of one row (its last packed segment), or null when nothing precedes the last supervised run. */
export function promptOfRow(row: Row): number[] | null {
  const lengths = row.seqLengths ?? [row.inputIds.length];
  const last = lengths[lengths.length - 1] ?? 0;
  const start = lengths.slice(0, -1).reduce((a, b) => a + b, 0);
  const end = start + last;
  let i = end - 1;
  while (i >= start && row.labels[i] === IGNORE_INDEX) i--;
  if (i < start) return null;
  while (i >= start && row.labels[i] !== IGNORE_INDEX) i--;
  const promptEnd = i + 1;
  return promptEnd > start ? row.inputIds.slice(start, promptEnd) : null;
}

/** Up to `n` prompts, from rows spread evenly over `rows` (deterministic, no RNG). */
export function heldOutPrompts(rows: readonly Row[], n: number): number[][] {
  const out: number[][] = [];
  for (const i of spread(rows.length, Math.min(n, rows.length))) {
    const p = promptOfRow(rows[i] as Row);
    if (p) out.push(p);
  }
  return out;
}

/**
 * Hold `n` rows out of training (spread evenly, so the slice is not just the
 * file's tail): at most a tenth of the rows, so small runs keep their data.
 */
export function splitHeldOut(rows: readonly Row[], n: number): { train: Row[]; heldOut: Row[] } {
  const k = Math.min(n, Math.floor(rows.length / 10));
  const picked = new Set(spread(rows.length, k));
  return { train: rows.filter((_, i) => !picked.has(i)), heldOut: rows.filter((_, i) => picked.has(i)) };
}

function spread(length: number, k: number): number[] {
  return Array.from({ length: k }, (_, j) => Math.floor(((j + 0.5) * length) / k));
}
