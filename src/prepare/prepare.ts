/**
 * `prepare`: conversations → labelled (optionally packed) rows, streamed
 * from JSONL in chunks, with the statistics of the manifest (SPEC §5).
 * `prepareRows` keeps rows in memory (the trainer's path); `prepareToDir`
 * writes shards + manifest.json into a staging folder renamed at the end.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChatsftError } from '../errors.js';
import type { Example, Row } from '../batch/types.js';
import { packExamples } from '../batch/pack.js';
import { readConversations, type Conversation } from '../data/conversations.js';
import { certainlyOver, overLengthMessage, sizeLimit, trimToBound } from '../data/limits.js';
import { dataReporter, type DataReport, type DataReporter } from '../data/report.js';
import { createEncoder, type EncodeOptions, type EncodeResult, type Staged } from '../labels/encode.js';
import { TEMPLATE_REASONS, type DropReason } from '../labels/types.js';
import { templateWhere } from '../template/spans.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { writeShard, type ShardFormat } from './shards.js';
import { replaceOutput, writeJsonAtomic } from '../util/atomic.js';
import { MANIFEST } from './manifest.js';

export interface SplitStats {
  lines: number;
  examples: number;
  rows: number;
  tokens: number;
  supervised_tokens: number;
  assistant_turns: number;
  trained_turns: number;
  supervised_eot: number;
  truncated: number;
  /** Assistant turns whose first token also held header text (masked; supervision starts at the next token). */
  straddled_turns: number;
  /** Trained turns with reasoning the template did not render (not in the rows, so not learned). */
  reasoning_dropped_turns: number;
  /** Dropped input lines by reason. */
  dropped: Partial<Record<DropReason, number>>;
  eot_token_ids: number[];
  /** The first problems, as file:line field: message. */
  issues: string[];
  /** Problems past the first ones, only counted. */
  issues_omitted: number;
}

export interface PrepareProgress {
  bytes: number;
  totalBytes: number;
  examples: number;
  tokens: number;
}

export interface PrepareOptions extends EncodeOptions {
  packing?: boolean;
  /** Conversations per tokenizer batch. */
  chunkSize?: number;
  /** Examples per packing window (packing is best-fit-decreasing within a window). */
  packWindow?: number;
  onProgress?: (p: PrepareProgress) => void;
  /** Called for each bad or dropped line (file:line field: message). */
  onIssue?: (message: string) => void;
}

function emptyStats(): SplitStats {
  return {
    lines: 0,
    examples: 0,
    rows: 0,
    tokens: 0,
    supervised_tokens: 0,
    assistant_turns: 0,
    trained_turns: 0,
    supervised_eot: 0,
    truncated: 0,
    straddled_turns: 0,
    reasoning_dropped_turns: 0,
    dropped: {},
    eot_token_ids: [],
    issues: [],
    issues_omitted: 0,
  };
}

/** The report of a split (SplitStats carry the same counts, for the manifest). */
export function reportOf(file: string, stats: SplitStats): DataReport {
  return {
    file,
    lines: stats.lines,
    used: stats.examples,
    dropped: stats.dropped,
    issues: stats.issues,
    issues_omitted: stats.issues_omitted,
  };
}

function account(stats: SplitStats, rep: DataReporter, r: EncodeResult, trimmed: Set<number>, eots: Set<number>): Example | undefined {
  if (!r.ok) {
    rep.drop(r.line, r.reason, r.reason, r.detail);
    return undefined;
  }
  rep.use();
  stats.examples++;
  stats.tokens += r.example.inputIds.length;
  if (r.truncated || trimmed.has(r.line)) stats.truncated++;
  for (const l of r.example.labels) if (l !== -100) stats.supervised_tokens++;
  for (const t of r.example.turns) {
    stats.assistant_turns++;
    if (t.straddled) stats.straddled_turns++;
    if (!t.trained) continue;
    if (t.reasoningDropped) stats.reasoning_dropped_turns++;
    stats.trained_turns++;
    if (r.example.labels[t.eot] === r.example.inputIds[t.eot]) {
      stats.supervised_eot++;
      eots.add(t.eotId);
    }
  }
  return { inputIds: r.example.inputIds, labels: r.example.labels, source: r.line };
}

/**
 * Stream a JSONL file through the encoder, handing finished rows to `emit`
 * in input order. Tokenization of one chunk overlaps rendering of the next.
 */
export async function processFile(
  setup: TokenizerSetup,
  file: string,
  opts: PrepareOptions,
  emit: (rows: Row[]) => void,
): Promise<SplitStats> {
  const encoder = createEncoder(setup, opts);
  const stats = emptyStats();
  const rep = dataReporter(file, opts.onIssue);
  stats.dropped = rep.report.dropped;
  stats.issues = rep.report.issues;
  /** Lines cut to a prefix before encoding (truncate_turns on a line over the size bound). */
  const trimmed = new Set<number>();
  const limit = sizeLimit(setup.folder, opts.maxLength);
  const eots = new Set<number>();
  const chunkSize = opts.chunkSize ?? 256;
  const packing = opts.packing ?? false;
  if (packing && opts.maxLength === undefined) throw new ChatsftError('CONFIG_INVALID', 'packing needs max_length', 'max_length');
  const totalBytes = statSync(file).size;
  let bytes = 0;
  let window: Example[] = [];
  const flushWindow = (): void => {
    if (window.length === 0) return;
    const rows = packExamples(window, opts.maxLength as number);
    stats.rows += rows.length;
    emit(rows);
    window = [];
  };
  let firstTemplateDrop: { reason: DropReason; detail: string } | undefined;
  const take = async (staged: Staged): Promise<void> => {
    const results = await encoder.finish(staged);
    const rows: Row[] = [];
    for (const r of results) {
      if (!r.ok && !firstTemplateDrop && TEMPLATE_REASONS.has(r.reason)) firstTemplateDrop = { reason: r.reason, detail: r.detail };
      const ex = account(stats, rep, r, trimmed, eots);
      if (!ex) continue;
      if (packing) window.push(ex);
      else rows.push({ inputIds: ex.inputIds, labels: ex.labels, source: ex.source });
    }
    if (packing) {
      if (window.length >= (opts.packWindow ?? 20000)) flushWindow();
    } else if (rows.length) {
      stats.rows += rows.length;
      emit(rows);
    }
    opts.onProgress?.({ bytes, totalBytes, examples: stats.examples, tokens: stats.tokens });
  };

  let chunk: Array<{ conversation: Conversation; line: number }> = [];
  let inFlight: Staged | undefined;
  for await (const parsed of readConversations(file)) {
    stats.lines = parsed.line;
    bytes += parsed.bytes;
    if (parsed.ok === 'blank') continue;
    if (parsed.ok === false) {
      rep.drop(parsed.line, parsed.reason ?? 'invalid_data', parsed.issue.field, parsed.issue.message);
      continue;
    }
    let conversation = parsed.conversation;
    // Size check before tokenizing: a line certainly over the limit is never tokenized whole.
    const over = limit ? certainlyOver(setup.tokenizer, conversation, limit.tokens) : undefined;
    if (over && limit) {
      const kept =
        limit.source === 'max_length' && opts.truncation === 'truncate_turns' ? trimToBound(conversation, over.bound) : undefined;
      if (!kept) {
        rep.drop(parsed.line, 'too_long', 'messages', overLengthMessage(over, limit));
        continue;
      }
      conversation = kept;
      trimmed.add(parsed.line);
    }
    chunk.push({ conversation, line: parsed.line });
    if (chunk.length >= chunkSize) {
      const staged = encoder.start(chunk);
      chunk = [];
      if (inFlight) await take(inFlight);
      inFlight = staged;
    }
  }
  if (chunk.length) {
    const staged = encoder.start(chunk);
    if (inFlight) await take(inFlight);
    inFlight = staged;
  }
  bytes = totalBytes;
  if (inFlight) await take(inFlight);
  flushWindow();
  stats.eot_token_ids = [...eots].sort((a, b) => a - b);
  stats.issues_omitted = rep.report.issues_omitted;
  failIfTemplateCannotServe(setup, file, stats, firstTemplateDrop);
  return stats;
}

/**
 * One bad line is dropped; a template that yields labels for no line at all
 * is a template problem and ends the run, naming it.
 */
function failIfTemplateCannotServe(
  setup: TokenizerSetup,
  file: string,
  stats: SplitStats,
  first: { reason: DropReason; detail: string } | undefined,
): void {
  if (stats.examples > 0 || !first) return;
  const templateDrops = [...TEMPLATE_REASONS].reduce((n, r) => n + (stats.dropped[r] ?? 0), 0);
  const all = Object.values(stats.dropped).reduce((n: number, c) => n + (c ?? 0), 0);
  if (templateDrops === 0 || templateDrops < all / 2) return;
  const code =
    first.reason === 'eot_not_found' ? 'TEMPLATE_NO_EOT' : first.reason === 'template_error' ? 'TEMPLATE_ERROR' : 'TEMPLATE_SPAN';
  const what =
    first.reason === 'eot_not_found'
      ? 'the template does not close assistant turns with a special token, so a model trained on it cannot learn to stop'
      : first.reason === 'template_error'
        ? 'the template raises on the data'
        : 'chatsft cannot locate the assistant turns in what the template renders';
  throw new ChatsftError(
    code,
    `no line of ${file} yields labels: ${what} (${templateDrops} of ${all} lines dropped for it; first: ${first.detail})`,
    templateWhere(setup.template),
  );
}

/** Prepare a file into memory (what `train` does with a JSONL path). */
export async function prepareRows(
  setup: TokenizerSetup,
  file: string,
  opts: PrepareOptions = {},
): Promise<{ rows: Row[]; stats: SplitStats }> {
  const rows: Row[] = [];
  const stats = await processFile(setup, file, opts, (r) => {
    for (const x of r) rows.push(x);
  });
  return { rows, stats };
}

/** manifest.json (SPEC §5): the train split's statistics and everything needed to use the shards. */
export interface Manifest extends Omit<SplitStats, 'lines'> {
  /** chatsft's signature: `--overwrite` replaces only folders that carry it. */
  generator: typeof GENERATOR;
  chatsft_version: string;
  created: string;
  model: string;
  data: string;
  pad_token: string;
  pad_token_id: number;
  padding_side: 'left' | 'right';
  added_tokens: Array<{ content: string; id: number }>;
  vocab_size: number;
  train_on: string;
  template: { origin: string; source: string; sha256: string };
  tokenizer_sha256: string;
  max_length: number | null;
  truncation: string;
  packing: boolean;
  format: ShardFormat;
  shards: string[];
  eval?: Omit<SplitStats, 'lines'> & { shards: string[]; data: string };
}

export { MANIFEST };
export const GENERATOR = 'chatsft';

export const DEFAULT_SHARD_BYTES = 64 * 1024 * 1024;

/** Bytes of a row's columns as int32 (what the shard holds; the JS arrays take about as much again). */
export function rowBytes(r: Row): number {
  const n = r.inputIds.length + r.labels.length + (r.positionIds?.length ?? 0) + (r.seqLengths?.length ?? 0) + (r.sources?.length ?? 1);
  return 4 * n;
}

export interface PrepareToDirOptions extends PrepareOptions {
  out: string;
  format?: ShardFormat;
  evalData?: string;
  /** Rows per shard file. */
  shardRows?: number;
  /**
   * A shard is also written once its rows hold this many bytes of int32
   * column data (default 64 MiB), so memory stays bounded whatever the
   * length of the conversations (300 MB of long ones once peaked at 2.7 GB
   * with a bound in rows only).
   */
  shardBytes?: number;
  overwrite?: boolean;
  /** The data report of each split, once it is read. */
  onReport?: (split: 'train' | 'eval', report: DataReport) => void;
  modelDir: string;
  version: string;
  /** Lines for the user that are not data issues (stale temps reclaimed). */
  onNote?: (line: string) => void;
}

/**
 * Why `dir` is not a folder `prepare` wrote (null when it is): its
 * manifest.json must parse and carry chatsft's signature (`generator`, or
 * for manifests older than that field, the keys only chatsft writes).
 */
export function notPreparedFolder(dir: string): string | null {
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) return 'not a folder prepared by chatsft (no manifest.json)';
  let m: unknown;
  try {
    m = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return `not a folder prepared by chatsft (${MANIFEST} is not valid JSON)`;
  }
  if (typeof m !== 'object' || m === null) return `not a folder prepared by chatsft (${MANIFEST} is not an object)`;
  const o = m as Record<string, unknown>;
  if (o['generator'] === GENERATOR) return null;
  const legacy = ['chatsft_version', 'tokenizer_sha256', 'shards', 'supervised_eot'].every((k) => k in o);
  return legacy ? null : `not a folder prepared by chatsft (${MANIFEST} has no "generator": "${GENERATOR}")`;
}

/** One line per drop reason: "invalid 3, too_long 2" (what a zero-example error shows). */
function reasons(s: SplitStats): string {
  const parts = Object.entries(s.dropped).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(', ') : 'no lines with a conversation';
}

/** A split that yields no example is an error (SPEC §3), raised before anything replaces the output. */
export function requireExamples(s: SplitStats, file: string): void {
  if (s.examples > 0) return;
  const first = s.issues[0] ? `; first: ${s.issues[0]}` : '';
  throw new ChatsftError('DATA_INVALID', `no usable example in ${s.lines} line(s): ${reasons(s)}${first}`, file);
}

export async function prepareToDir(setup: TokenizerSetup, data: string, opts: PrepareToDirOptions): Promise<Manifest> {
  const out = resolve(opts.out);
  const format = opts.format ?? 'parquet';
  const shardRows = opts.shardRows ?? 50000;
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  const protect = [data, opts.modelDir, ...(opts.evalData ? [opts.evalData] : [])];
  return replaceOutput(
    out,
    async (staging) => {
      const writeSplit = async (split: string, file: string): Promise<{ stats: SplitStats; shards: string[] }> => {
        const shards: string[] = [];
        let buffer: Row[] = [];
        let buffered = 0;
        const flush = (): void => {
          if (buffer.length === 0) return;
          shards.push(writeShard(staging, split, shards.length, buffer, opts.packing ?? false, format));
          buffer = [];
          buffered = 0;
        };
        const stats = await processFile(setup, file, opts, (rows) => {
          for (const r of rows) {
            buffer.push(r);
            buffered += rowBytes(r);
            if (buffer.length >= shardRows || buffered >= shardBytes) flush();
          }
        });
        opts.onReport?.(split === 'eval' ? 'eval' : 'train', reportOf(file, stats));
        requireExamples(stats, file);
        flush();
        return { stats, shards };
      };
      const train = await writeSplit('train', data);
      const evalSplit = opts.evalData ? await writeSplit('eval', opts.evalData) : undefined;
      const s = train.stats;
      const manifest: Manifest = {
        generator: GENERATOR,
        chatsft_version: opts.version,
        created: new Date().toISOString(),
        model: opts.modelDir,
        data,
        ...omitLines(s),
        pad_token: setup.padToken,
        pad_token_id: setup.padId,
        padding_side: setup.paddingSide,
        added_tokens: setup.addedTokens,
        vocab_size: setup.vocabSize,
        train_on: opts.trainOn ?? 'assistant',
        template: { origin: setup.template.origin, source: setup.template.source, sha256: setup.template.sha256 },
        tokenizer_sha256: setup.folder.tokenizerSha256,
        max_length: opts.maxLength ?? null,
        truncation: opts.truncation ?? 'drop',
        packing: opts.packing ?? false,
        format,
        shards: train.shards,
        ...(evalSplit && opts.evalData ? { eval: { ...omitLines(evalSplit.stats), shards: evalSplit.shards, data: opts.evalData } } : {}),
      };
      // The tokenizer the ids refer to (with any tokens chatsft added); the manifest last, as the mark of a complete folder.
      setup.tokenizer.save(join(staging, 'tokenizer.json'));
      writeJsonAtomic(join(staging, MANIFEST), manifest);
      return manifest;
    },
    {
      kind: 'dir',
      overwrite: Boolean(opts.overwrite),
      notOwned: notPreparedFolder,
      protect,
      flag: '--out',
      ...(opts.onNote ? { onNote: opts.onNote } : {}),
    },
  );
}

function omitLines(s: SplitStats): Omit<SplitStats, 'lines'> {
  const { lines: _lines, ...rest } = s;
  return rest;
}
