/**
 * Prepared shards (SPEC §5): Parquet (list<int32> columns, readable by
 * Hugging Face `datasets`, pyarrow and arrow-rs) or JSONL with the same
 * fields. Every file is written to a temp name and renamed.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic.js';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { parquetReadObjects } from 'hyparquet';
import { ChatsftError } from '../errors.js';
import type { Row } from '../batch/types.js';

export type ShardFormat = 'parquet' | 'jsonl';

type Column = { name: string; list: boolean; get: (r: Row) => number[] | number };

function columnsFor(packed: boolean): Column[] {
  const cols: Column[] = [
    { name: 'input_ids', list: true, get: (r) => r.inputIds },
    { name: 'labels', list: true, get: (r) => r.labels },
  ];
  if (packed) {
    cols.push(
      { name: 'position_ids', list: true, get: (r) => r.positionIds ?? [] },
      { name: 'seq_lengths', list: true, get: (r) => r.seqLengths ?? [] },
      { name: 'sources', list: true, get: (r) => r.sources ?? [] },
    );
  } else {
    cols.push({ name: 'source', list: false, get: (r) => r.source ?? 0 });
  }
  return cols;
}

export function shardName(split: string, index: number, format: ShardFormat): string {
  return `${split}-${String(index).padStart(5, '0')}.${format}`;
}

/** Write one shard of rows; returns the file name. */
export function writeShard(dir: string, split: string, index: number, rows: Row[], packed: boolean, format: ShardFormat): string {
  const name = shardName(split, index, format);
  const cols = columnsFor(packed);
  if (format === 'jsonl') {
    const lines = rows.map((r) => JSON.stringify(Object.fromEntries(cols.map((c) => [c.name, c.get(r)]))));
    writeFileAtomic(join(dir, name), lines.join('\n') + (lines.length ? '\n' : ''));
    return name;
  }
  const schema: Array<Record<string, unknown>> = [{ name: 'root', num_children: cols.length }];
  for (const c of cols) {
    if (c.list) {
      // The 3-level LIST layout of the Parquet spec, as pyarrow writes list<int32>.
      schema.push(
        { name: c.name, repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'REQUIRED', type: 'INT32' },
      );
    } else {
      schema.push({ name: c.name, repetition_type: 'REQUIRED', type: 'INT32' });
    }
  }
  const buf = parquetWriteBuffer({
    columnData: cols.map((c) => ({ name: c.name, data: rows.map((r) => c.get(r)) })),
    schema: schema as never,
    kvMetadata: [{ key: 'chatsft', value: JSON.stringify({ packed }) }],
    createdBy: 'chatsft',
  });
  writeFileAtomic(join(dir, name), new Uint8Array(buf));
  return name;
}

function toRow(o: Record<string, unknown>, where: string): Row {
  const list = (k: string): number[] => {
    const v = o[k];
    if (!Array.isArray(v)) throw new ChatsftError('FILE_CORRUPT', `column ${k} missing or not a list`, where);
    return v.map(Number);
  };
  const row: Row = { inputIds: list('input_ids'), labels: list('labels') };
  if (o['seq_lengths'] !== undefined) {
    row.positionIds = list('position_ids');
    row.seqLengths = list('seq_lengths');
    row.sources = list('sources');
  } else if (o['source'] !== undefined) {
    row.source = Number(o['source']);
  }
  if (row.inputIds.length !== row.labels.length) throw new ChatsftError('FILE_CORRUPT', 'input_ids and labels differ in length', where);
  return row;
}

/** Read every row of the shards of one split, in order. */
export async function readShards(dir: string, split = 'train'): Promise<Row[]> {
  if (!existsSync(dir)) throw new ChatsftError('FILE_MISSING', 'prepared folder not found', dir);
  const files = readdirSync(dir)
    .filter((f) => f.startsWith(`${split}-`) && (f.endsWith('.parquet') || f.endsWith('.jsonl')))
    .sort();
  const rows: Row[] = [];
  for (const f of files) {
    const path = join(dir, f);
    if (f.endsWith('.jsonl')) {
      readFileSync(path, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (line.trim() === '') return;
          let o: unknown;
          try {
            o = JSON.parse(line);
          } catch {
            throw new ChatsftError('FILE_CORRUPT', 'invalid JSON', `${path}:${i + 1}`);
          }
          rows.push(toRow(o as Record<string, unknown>, `${path}:${i + 1}`));
        });
    } else {
      const buf = readFileSync(path);
      let objects: Array<Record<string, unknown>>;
      try {
        objects = (await parquetReadObjects({ file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) })) as Array<
          Record<string, unknown>
        >;
      } catch (e) {
        throw new ChatsftError('FILE_CORRUPT', `not a readable Parquet file: ${(e as Error).message}`, path);
      }
      objects.forEach((o, i) => rows.push(toRow(o, `${path} row ${i}`)));
    }
  }
  return rows;
}
