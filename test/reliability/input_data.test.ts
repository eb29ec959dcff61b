/**
 * Issue 10 §4, §6, §11: every command that reads conversations reads them
 * the same way and reports the same thing — `file:line field: problem` for
 * the first lines, counts by reason — on stderr and in --json; a BOM is
 * stripped, invalid UTF-8 is a bad line, a 3 MB line is dropped as too long
 * without being tokenized (tokenizing it with this BPE takes minutes, so a
 * regression times out), prepare's shard buffer is bounded in bytes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertClean, assertUsageError, cli, makeSandbox, MIXED, type Sandbox } from './input_cli.js';
import { readLines } from '../../src/data/read.js';
import { prepareToDir } from '../../src/prepare/prepare.js';
import { loadModelFolder } from '../../src/model/folder.js';
import { setupTokenizer } from '../../src/tokenize/setup.js';

let s: Sandbox;
before(async () => {
  s = await makeSandbox('chatsft-input-data-');
});
after(() => rmSync(s.root, { recursive: true, force: true }));

const EXPECTED_DROPS = { invalid_data: 2, invalid_utf8: 1, special_tokens_in_content: 1, too_long: 1, no_supervised_tokens: 1 };

interface Report {
  file: string;
  lines: number;
  used: number;
  dropped: Record<string, number>;
  issues: string[];
  issues_omitted: number;
}

/** The per-line messages a report must contain, each naming file:line and the field. */
function assertLineMessages(text: string, file: string): void {
  assert.match(text, new RegExp(`${file}:2 \\(line\\): not valid UTF-8 \\(byte 0xe9`));
  assert.match(text, new RegExp(`${file}:3 \\(line\\): invalid JSON`));
  assert.match(text, new RegExp(`${file}:4 messages\\[0\\]\\.role: unknown role 'bot'`));
  assert.match(text, new RegExp(`${file}:5 \\S+: .*special token <\\|im_end\\|>`));
  assert.match(text, new RegExp(`${file}:6 messages: 3000002 characters of content, more than .* not tokenized`));
  assert.doesNotMatch(text, new RegExp(`${file}:1 `), 'the BOM line is valid');
}

test('prepare: BOM stripped, each bad line reported once as file:line field, counts by reason on stderr and in --json', () => {
  const out = join(s.root, 'prep');
  const r = cli(['prepare', '--model', s.model, '--data', s.mixed, '--out', out, '--json']);
  assertClean(r);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { examples: number; dropped: Record<string, number>; data_report: Report };
  assert.equal(j.examples, MIXED.valid.length);
  assert.deepEqual(j.dropped, EXPECTED_DROPS);
  assert.deepEqual(j.data_report.dropped, EXPECTED_DROPS);
  assert.equal(j.data_report.lines, MIXED.lines);
  assert.equal(j.data_report.used, MIXED.valid.length);
  assertLineMessages(r.stderr, s.mixed);
  assert.match(r.stderr, /6 of 12 line\(s\) dropped \(invalid_data 2, .*invalid_utf8 1.*\); 5 used/);
  // Shown once each (not once live and once in the summary).
  assert.equal(r.stderr.split(`${s.mixed}:3 `).length - 1, 1, r.stderr);
});

test('prepare: only the first 10 problems are listed, the rest counted', () => {
  const file = join(s.root, 'many-bad.jsonl');
  const good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}';
  writeFileSync(file, [good, ...Array.from({ length: 25 }, (_, i) => `{"messages": ${i}}`)].join('\n') + '\n');
  const r = cli(['prepare', '--model', s.model, '--data', file, '--out', join(s.root, 'prep-many'), '--json']);
  assertClean(r);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr.split('\n').filter((l) => new RegExp(`${file}:\\d`).test(l)).length, 10, r.stderr);
  assert.match(r.stderr, /\.\.\. and 15 more/);
  assert.match(r.stderr, /25 of 26 line\(s\) dropped \(invalid_data 25\)/);
  const j = JSON.parse(r.stdout) as { data_report: Report };
  assert.equal(j.data_report.issues.length, 25);
});

test('train --data JSONL reports dropped lines of both splits before training, and in --json', () => {
  const r = cli([
    'train',
    '--model',
    s.model,
    '--data',
    s.mixed,
    '--eval-data',
    s.mixed,
    '--output-dir',
    join(s.root, 'run'),
    '--max-steps',
    '1',
    '--batch-size',
    '2',
    '--quiet',
    '--json',
  ]);
  assertClean(r);
  assert.equal(r.code, 0, r.stderr);
  assertLineMessages(r.stderr, s.mixed);
  // Both splits' summaries come before anything else the run prints.
  const summaries = r.stderr.split('\n').filter((l) => l.includes('6 of 12 line(s) dropped'));
  assert.equal(summaries.length, 2, r.stderr);
  const j = JSON.parse(r.stdout) as { steps: number; data_reports: { train: Report; eval: Report } };
  assert.equal(j.steps, 1);
  assert.deepEqual(j.data_reports.train.dropped, EXPECTED_DROPS);
  assert.deepEqual(j.data_reports.eval.dropped, EXPECTED_DROPS);
});

test('train: max_length below every example says why, by reason (not "no training rows")', () => {
  const r = cli([
    'train',
    '--model',
    s.model,
    '--data',
    s.mixed,
    '--output-dir',
    join(s.root, 'run-short'),
    '--max-steps',
    '1',
    '--max-length',
    '4',
    '--quiet',
  ]);
  assertUsageError(r, /error\[DATA_INVALID\] .*mixed\.jsonl: no usable example in 12 line\(s\): .*too_long 6.*; first: /);
});

test('inspect: the same report on stderr and in --json', () => {
  // Index 2 among the parsed lines is line 6 (too long), so --count 2 shows line 8.
  const r = cli(['inspect', '--model', s.model, '--data', s.mixed, '--index', '2', '--count', '2', '--json']);
  assertClean(r);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { examples: unknown[]; data_report: Report };
  assert.equal(j.examples.length, 1);
  // Read up to line 8: 2, 3, 4 fail to parse, 6 is too long (never tokenized); 1 and 5 come before --index.
  assert.equal(j.data_report.lines, 8);
  assert.deepEqual(j.data_report.dropped, { invalid_data: 2, invalid_utf8: 1, too_long: 1 });
  assert.match(r.stderr, new RegExp(`${s.mixed}:2 \\(line\\): not valid UTF-8`));
});

test('doctor audits --data and --eval-data (no longer ignored) with the same report', () => {
  const bad = join(s.root, 'eval-bad.jsonl');
  writeFileSync(
    bad,
    Buffer.concat([Buffer.from('{"messages": [{"role": "user", "content": "\xff'), Buffer.from([0xff]), Buffer.from('"}]}\n')]),
  );
  const r = cli(['doctor', '--model', s.model, '--data', s.train, '--eval-data', bad, '--json']);
  assertClean(r);
  assert.equal(r.code, 1, 'an invalid line in the eval data is an error finding');
  const j = JSON.parse(r.stdout) as { findings: Array<{ code: string; message: string }>; data_reports: { train: Report; eval: Report } };
  const invalid = j.findings.filter((f) => f.code === 'DATA_INVALID');
  assert.equal(invalid.length, 1);
  assert.match(invalid[0]!.message, /eval-bad\.jsonl/);
  assert.deepEqual(j.data_reports.eval.dropped, { invalid_utf8: 1 });
  assert.deepEqual(j.data_reports.train.dropped, {});
  assert.match(r.stderr, /eval-bad\.jsonl:1 \(line\): not valid UTF-8/);
  // A folder given as --eval-data is refused like one given as --data.
  assertUsageError(
    cli(['doctor', '--model', s.model, '--eval-data', s.root]),
    /doctor reads conversations \(JSONL\), not a prepared folder/,
  );
});

test('doctor --data: bad lines and the 3 MB line reported without tokenizing it', () => {
  const r = cli(['doctor', '--model', s.model, '--data', s.mixed, '--json']);
  assertClean(r);
  const j = JSON.parse(r.stdout) as { data_reports: { train: Report } };
  assert.deepEqual(j.data_reports.train.dropped, EXPECTED_DROPS);
  assertLineMessages(r.stderr, s.mixed);
});

test('readLines: BOM only at the start, CRLF, a last line without newline, an oversized line skipped unread', async () => {
  const file = join(s.root, 'lines.jsonl');
  const bom = Buffer.from([0xef, 0xbb, 0xbf]);
  writeFileSync(
    file,
    Buffer.concat([bom, Buffer.from('a\r\n'), bom, Buffer.from('b\n'), Buffer.from('x'.repeat(100)), Buffer.from('\nlast')]),
  );
  const got: unknown[] = [];
  for await (const l of readLines(file, { maxLineBytes: 50 })) got.push('text' in l ? l.text : l.problem);
  // A BOM inside the file is text (and then invalid JSON), not silently dropped.
  assert.deepEqual(got, ['a', '\ufeffb', 'line_too_large', 'last']);
  // Overlong encodings, surrogates and truncated sequences are invalid; 4-byte characters are fine.
  writeFileSync(
    file,
    Buffer.concat([
      Buffer.from([0xc0, 0xaf]),
      Buffer.from('\n'),
      Buffer.from([0xed, 0xa0, 0x80]),
      Buffer.from('\n'),
      Buffer.from([0xe2, 0x82]),
      Buffer.from('\n'),
      Buffer.from('😀\n'),
    ]),
  );
  const kinds: unknown[] = [];
  for await (const l of readLines(file)) kinds.push('text' in l ? l.text : l.problem);
  assert.deepEqual(kinds, ['invalid_utf8', 'invalid_utf8', 'invalid_utf8', '😀']);
  // A UTF-16 file is one clear error, not every line reported as invalid UTF-8.
  writeFileSync(file, Buffer.from('\ufeff{"messages": []}\n', 'utf16le'));
  const r = cli(['prepare', '--model', s.model, '--data', file, '--out', join(s.root, 'p-u16')]);
  assertUsageError(r, /error\[DATA_INVALID\] .*lines\.jsonl: the file is UTF-16/);
});

test('prepare: a folder or a missing file as --data is a clear error', () => {
  assertUsageError(
    cli(['prepare', '--model', s.model, '--data', s.root, '--out', join(s.root, 'p-dir')]),
    /error\[IO_ERROR\] .*is a folder, not a JSONL file \(EISDIR\)/,
  );
  assertUsageError(
    cli(['prepare', '--model', s.model, '--data', join(s.root, 'nope.jsonl'), '--out', join(s.root, 'p-none')]),
    /error\[FILE_MISSING\].*nope\.jsonl/,
  );
});

test('prepare: truncate_turns keeps the turns that fit from a line over the size bound, without tokenizing it whole', () => {
  const file = join(s.root, 'long-tail.jsonl');
  const conv = {
    messages: [
      { role: 'user', content: 'Repeat go 2 times.' },
      { role: 'assistant', content: 'go go' },
      { role: 'user', content: 'a'.repeat(2_000_000) },
      { role: 'assistant', content: 'ok' },
    ],
  };
  writeFileSync(file, JSON.stringify(conv) + '\n');
  const r = cli([
    'prepare',
    '--model',
    s.model,
    '--data',
    file,
    '--out',
    join(s.root, 'p-trunc'),
    '--max-length',
    '64',
    '--truncation',
    'truncate_turns',
    '--json',
  ]);
  assertClean(r);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { examples: number; trained_turns: number; supervised_eot: number; dropped: Record<string, number> };
  assert.deepEqual([j.examples, j.trained_turns, j.supervised_eot], [1, 1, 1]);
  assert.deepEqual(j.dropped, {});
});

test('prepare: the shard buffer is bounded in bytes, not only rows', async () => {
  const setup = setupTokenizer(loadModelFolder(s.model));
  const out = join(s.root, 'p-bytes');
  const manifest = await prepareToDir(setup, s.train, {
    out,
    modelDir: s.model,
    version: 'test',
    format: 'jsonl',
    shardRows: 1000,
    shardBytes: 2000,
  });
  // 20 rows of ~20-40 tokens × 3 columns × 4 bytes: a few rows per shard.
  assert.ok(manifest.shards.length >= 3, `shards: ${manifest.shards.length}`);
  assert.equal(readdirSync(out).filter((f) => f.startsWith('train-')).length, manifest.shards.length);
  assert.equal(manifest.examples, 20);
});
