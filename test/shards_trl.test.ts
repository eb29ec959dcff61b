/**
 * The Parquet shards of `chatsft prepare` as PyTorch trainers read them
 * (docs/pytorch-trainers.md). The files are read by arrow-rs (parquet-wasm):
 * its record batches are exported through the Arrow C Data Interface and the
 * ArrowSchema / ArrowArray structs are walked here straight out of wasm
 * memory, so column types and values come from arrow-rs's decoding, not from
 * our writer's own reader (hyparquet), which is then compared with it.
 *
 * What TRL / transformers rely on, checked on packed and unpacked shards:
 *  - columns `input_ids`, `labels` (and `position_ids`, `seq_lengths` packed)
 *    are list<int32>, one row per example or packed row;
 *  - every label is -100 or equals its input id;
 *  - packed rows: position_ids restart at 0 for each seq_lengths entry, i.e.
 *    exactly what TRL's padding-free collator rebuilds from `seq_lengths`;
 *    and the first token of each sequence is never supervised, so the
 *    collators that overwrite it with -100 (TRL padding-free,
 *    DataCollatorWithFlattening) lose nothing;
 *  - the EOT labels survive a pad token equal to the EOT, and a collator that
 *    masks labels by pad id would erase every one of them (SPEC §1).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as parquetWasm from 'parquet-wasm';
import { buildFixture, cleanupTemp, tempRoot, writeJsonl, REPO_ROOT } from './helpers/fixtures.js';
import { readShards } from '../src/prepare/shards.js';

after(cleanupTemp);

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function prepare(args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, [CLI, 'prepare', ...args, '--json', '--quiet'], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

// ---------- Arrow C Data Interface, read from parquet-wasm's memory (wasm32: 4-byte pointers) ----------

interface Field {
  format: string;
  name: string;
  nullable: boolean;
  children: Field[];
}
interface ArrayNode {
  length: number;
  nullCount: number;
  offset: number;
  buffers: number[];
  children: ArrayNode[];
}

function view(): DataView {
  // Re-read each time: memory growth detaches the old buffer.
  return new DataView(parquetWasm.wasmMemory().buffer);
}

function cString(ptr: number): string {
  const bytes = new Uint8Array(parquetWasm.wasmMemory().buffer);
  let end = ptr;
  while (bytes[end] !== 0) end++;
  return Buffer.from(bytes.subarray(ptr, end)).toString('utf8');
}

/** struct ArrowSchema { format*, name*, metadata*, int64 flags, int64 n_children, children**, dictionary*, release, private_data } */
function readSchema(ptr: number): Field {
  const d = view();
  const namePtr = d.getUint32(ptr + 4, true);
  const flags = d.getBigInt64(ptr + 16, true);
  const n = Number(d.getBigInt64(ptr + 24, true));
  const kids = d.getUint32(ptr + 32, true);
  const children: Field[] = [];
  for (let i = 0; i < n; i++) children.push(readSchema(view().getUint32(kids + 4 * i, true)));
  // ARROW_FLAG_NULLABLE = 2
  return { format: cString(d.getUint32(ptr, true)), name: namePtr ? cString(namePtr) : '', nullable: (flags & 2n) !== 0n, children };
}

/** struct ArrowArray { int64 length, null_count, offset, n_buffers, n_children; buffers**, children**, dictionary*, release, private_data } */
function readArray(ptr: number): ArrayNode {
  const d = view();
  const nBuf = Number(d.getBigInt64(ptr + 24, true));
  const nKids = Number(d.getBigInt64(ptr + 32, true));
  const bufs = d.getUint32(ptr + 40, true);
  const kids = d.getUint32(ptr + 44, true);
  const buffers: number[] = [];
  for (let i = 0; i < nBuf; i++) buffers.push(d.getUint32(bufs + 4 * i, true));
  const children: ArrayNode[] = [];
  for (let i = 0; i < nKids; i++) children.push(readArray(view().getUint32(kids + 4 * i, true)));
  return {
    length: Number(d.getBigInt64(ptr, true)),
    nullCount: Number(d.getBigInt64(ptr + 8, true)),
    offset: Number(d.getBigInt64(ptr + 16, true)),
    buffers,
    children,
  };
}

function int32s(ptr: number, from: number, count: number): number[] {
  return Array.from(new Int32Array(parquetWasm.wasmMemory().buffer.slice(ptr + 4 * from, ptr + 4 * (from + count))));
}

/** A `list<int32>` column ('+l' with an 'i' child): int32 offsets in buffer 1, child values in its buffer 1. */
function listColumn(a: ArrayNode): number[][] {
  const values = a.children[0]!;
  assert.equal(a.nullCount, 0);
  assert.equal(values.nullCount, 0);
  const offsets = int32s(a.buffers[1]!, a.offset, a.length + 1);
  return Array.from({ length: a.length }, (_, r) => int32s(values.buffers[1]!, values.offset + offsets[r]!, offsets[r + 1]! - offsets[r]!));
}

interface ArrowShard {
  schema: Field;
  columns: Map<string, number[][] | number[]>;
  rows: number;
}

/** Every record batch of a Parquet file as arrow-rs decodes it: the schema and each column's values. */
function readWithArrowRs(file: string): ArrowShard {
  const table = parquetWasm.readParquet(new Uint8Array(readFileSync(file)));
  const columns = new Map<string, number[][] | number[]>();
  let schema: Field | null = null;
  let rows = 0;
  for (const batch of table.recordBatches()) {
    const ffi = batch.toFFI();
    const s = readSchema(ffi.schemaAddr());
    const a = readArray(ffi.arrayAddr());
    schema ??= s;
    assert.equal(s.format, '+s', 'a record batch is exported as a struct array');
    s.children.forEach((f, i) => {
      const col = a.children[i]!;
      const vals = f.format === '+l' ? listColumn(col) : int32s(col.buffers[1]!, col.offset, col.length);
      columns.set(f.name, [...((columns.get(f.name) ?? []) as unknown[]), ...vals] as number[][] | number[]);
    });
    rows += a.length;
    ffi.free();
    batch.free();
  }
  table.free();
  assert.ok(schema, 'at least one record batch');
  return { schema, columns, rows };
}

const list = (s: ArrowShard, name: string): number[][] => s.columns.get(name) as number[][];

// ---------- data ----------

function chats(): string {
  const rows = [];
  for (let i = 0; i < 12; i++) {
    const turns = [
      { role: 'user', content: `Question ${i}: what is ${i} + ${i}?` },
      { role: 'assistant', content: `${i} + ${i} = ${2 * i}.` },
    ];
    if (i % 3 === 0) turns.push({ role: 'user', content: 'And doubled?' }, { role: 'assistant', content: `${4 * i}.` });
    rows.push({ messages: i % 4 === 0 ? [{ role: 'system', content: 'Answer briefly.' }, ...turns] : turns });
  }
  return writeJsonl('trl.jsonl', rows);
}

const LIST_INT32 = (name: string): Field => ({
  format: '+l',
  name,
  nullable: false,
  children: [{ format: 'i', name: 'element', nullable: false, children: [] }],
});

function assertLabelsAreInputsOrIgnored(s: ArrowShard): void {
  const ids = list(s, 'input_ids');
  const labels = list(s, 'labels');
  ids.forEach((row, r) => {
    assert.equal(labels[r]!.length, row.length, `row ${r}: labels and input_ids have equal length`);
    labels[r]!.forEach((l, i) => assert.ok(l === -100 || l === row[i], `row ${r} position ${i}: label ${l}, input ${row[i]}`));
  });
}

const countEot = (rows: number[][], eot: number): number => rows.reduce((n, r) => n + r.filter((x) => x === eot).length, 0);

test('unpacked shards: list<int32> input_ids/labels, int32 source, labels = input or -100, first label ignored', async () => {
  const model = buildFixture('qwen3');
  const out = join(tempRoot(), 'trl-unpacked');
  const m = prepare(['--model', model, '--data', chats(), '--out', out]);
  const s = readWithArrowRs(join(out, 'train-00000.parquet'));
  assert.deepEqual(s.schema.children, [
    LIST_INT32('input_ids'),
    LIST_INT32('labels'),
    { format: 'i', name: 'source', nullable: false, children: [] },
  ]);
  assert.equal(s.rows, 12);
  assert.equal(s.rows, m['rows']);
  assertLabelsAreInputsOrIgnored(s);
  // DataCollatorWithFlattening (and TRL padding-free) replace each sequence's first label with -100.
  for (const row of list(s, 'labels')) assert.equal(row[0], -100);
  const eot = (m['eot_token_ids'] as number[])[0]!;
  assert.equal(countEot(list(s, 'labels'), eot), m['supervised_eot']);
  assert.equal(m['supervised_eot'], 16);

  const ours = await readShards(out);
  assert.deepEqual(
    list(s, 'input_ids'),
    ours.map((r) => [...r.inputIds]),
  );
  assert.deepEqual(
    list(s, 'labels'),
    ours.map((r) => [...r.labels]),
  );
  assert.deepEqual(
    s.columns.get('source'),
    ours.map((r) => r.source),
  );
});

test('packed shards: position_ids restart at 0 for each seq_lengths entry (what TRL rebuilds), values as hyparquet reads them', async () => {
  const model = buildFixture('qwen3');
  const out = join(tempRoot(), 'trl-packed');
  const m = prepare(['--model', model, '--data', chats(), '--out', out, '--packing', '--max-length', '96']);
  const s = readWithArrowRs(join(out, 'train-00000.parquet'));
  assert.deepEqual(s.schema.children, ['input_ids', 'labels', 'position_ids', 'seq_lengths', 'sources'].map(LIST_INT32));
  assert.equal(s.rows, m['rows']);
  assert.ok(s.rows > 1 && s.rows < 12, `${s.rows} packed rows for 12 examples`);
  assertLabelsAreInputsOrIgnored(s);
  const pos = list(s, 'position_ids');
  const lens = list(s, 'seq_lengths');
  const labels = list(s, 'labels');
  let sequences = 0;
  list(s, 'input_ids').forEach((ids, r) => {
    assert.ok(ids.length <= 96);
    assert.equal(
      lens[r]!.reduce((a, b) => a + b, 0),
      ids.length,
      `row ${r}: seq_lengths cover the row`,
    );
    // TRL's get_position_ids_from_packed_seq_lengths: arange per sequence, concatenated.
    assert.deepEqual(
      pos[r],
      lens[r]!.flatMap((n) => Array.from({ length: n }, (_, i) => i)),
      `row ${r}`,
    );
    pos[r]!.forEach((p, i) => {
      if (p === 0) assert.equal(labels[r]![i], -100, `row ${r}: sequence start at ${i} is not supervised`);
    });
    assert.equal(lens[r]!.length, list(s, 'sources')[r]!.length);
    sequences += lens[r]!.length;
  });
  assert.equal(sequences, 12);
  assert.equal(countEot(labels, (m['eot_token_ids'] as number[])[0]!), 16);

  const ours = await readShards(out);
  assert.deepEqual(
    list(s, 'input_ids'),
    ours.map((r) => [...r.inputIds]),
  );
  assert.deepEqual(
    list(s, 'labels'),
    ours.map((r) => [...r.labels]),
  );
  assert.deepEqual(
    pos,
    ours.map((r) => [...(r.positionIds ?? [])]),
  );
  assert.deepEqual(
    lens,
    ours.map((r) => [...(r.seqLengths ?? [])]),
  );
  assert.deepEqual(
    list(s, 'sources'),
    ours.map((r) => [...(r.sources ?? [])]),
  );
});

test('pad = EOT: the shards still supervise every EOT; masking labels by pad id (HF LM collator) would erase them all', () => {
  const model = buildFixture('qwen3');
  const out = join(tempRoot(), 'trl-pad-eos');
  const m = prepare(['--model', model, '--data', chats(), '--out', out, '--pad', 'eos']);
  const eot = (m['eot_token_ids'] as number[])[0]!;
  assert.equal(m['pad_token_id'], eot, 'qwen3 eos_token is <|im_end|>, the EOT');
  const s = readWithArrowRs(join(out, 'train-00000.parquet'));
  assert.equal(countEot(list(s, 'labels'), eot), 16, 'labels come from spans, not from the pad id');
  // transformers DataCollatorForLanguageModeling(mlm=False): labels = input_ids.clone(); labels[labels == pad_id] = -100.
  const lm = list(s, 'input_ids').map((row) => row.map((x) => (x === m['pad_token_id'] ? -100 : x)));
  assert.equal(countEot(lm, eot), 0);
});
