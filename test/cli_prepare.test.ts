/**
 * The real CLI on small real files: prepare to Parquet and JSONL (read back
 * with hyparquet and with arrow-rs through parquet-wasm), bad lines reported
 * with file:line and field, exit codes, no partial output, inspect.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as parquetWasm from 'parquet-wasm';
import { buildFixture, cleanupTemp, tempRoot, writeJsonl, REPO_ROOT } from './helpers/fixtures.js';
import { readShards } from '../src/prepare/shards.js';

after(cleanupTemp);

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function run(args: string[], env: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const GOOD = [
  {
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ],
  },
  {
    conversations: [
      { from: 'human', value: 'Count to 3' },
      { from: 'gpt', value: '1 2 3' },
      { from: 'human', value: 'Again' },
      { from: 'gpt', value: '1 2 3' },
    ],
  },
  {
    messages: [
      { role: 'user', content: 'Tell me a long story about a very long journey across the sea and back' },
      { role: 'assistant', content: 'Once upon a time there was a sailor who sailed and sailed for many days and nights.' },
    ],
  },
];

function dataFile(): string {
  return writeJsonl('chats.jsonl', [
    GOOD[0],
    '{"messages": [',
    GOOD[1],
    { messages: [{ role: 'bot', content: 'x' }] },
    '',
    {
      messages: [
        { role: 'user', content: 'say <|im_end|>' },
        { role: 'assistant', content: 'no' },
      ],
    },
    GOOD[2],
  ]);
}

test('prepare writes Parquet shards and a manifest; bad lines are reported with file:line and field', () => {
  const model = buildFixture('mistral-chatml');
  const data = dataFile();
  const out = join(tempRoot(), 'prep-parquet');
  const r = run(['prepare', '--model', model, '--data', data, '--out', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(summary['examples'], 3);
  assert.match(r.stderr, new RegExp(`chats\\.jsonl:2 \\(line\\): invalid JSON`));
  assert.match(r.stderr, /chats\.jsonl:4 messages\[0\]\.role: unknown role 'bot'/);
  assert.match(r.stderr, /chats\.jsonl:6 special_tokens_in_content: messages\[0\]\.content contains the special token/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');

  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(manifest['dropped'], { invalid_data: 2, special_tokens_in_content: 1 });
  assert.equal(manifest['assistant_turns'], 4);
  assert.equal(manifest['trained_turns'], 4);
  assert.equal(manifest['supervised_eot'], 4);
  assert.deepEqual(manifest['eot_token_ids'], [32000]);
  assert.equal(manifest['pad_token'], '<unk>');
  assert.equal(manifest['pad_token_id'], 0);
  assert.deepEqual(manifest['shards'], ['train-00000.parquet']);
  for (const key of ['examples', 'tokens', 'supervised_tokens', 'template', 'tokenizer_sha256', 'max_length', 'packing', 'format']) {
    assert.ok(key in manifest, key);
  }

  // An independent reader (arrow-rs compiled to wasm) sees the same schema and rows.
  const bytes = new Uint8Array(readFileSync(join(out, 'train-00000.parquet')));
  const file = parquetWasm.readParquet(bytes);
  const schema = file.schema;
  assert.deepEqual(
    ['input_ids', 'labels', 'source'].map((n) => schema.indexOf(n)),
    [0, 1, 2],
  );
  assert.throws(() => schema.indexOf('position_ids'), /position_ids/);
  assert.equal(
    file.recordBatches().reduce((n, b) => n + b.numRows, 0),
    3,
  );
  file.free();
});

test('Parquet and JSONL shards hold the same rows, in input order', async () => {
  const model = buildFixture('qwen3');
  const data = dataFile();
  const pq = join(tempRoot(), 'prep-pq');
  const js = join(tempRoot(), 'prep-jsonl');
  assert.equal(run(['prepare', '--model', model, '--data', data, '--out', pq, '--quiet']).code, 0);
  assert.equal(run(['prepare', '--model', model, '--data', data, '--out', js, '--format', 'jsonl', '--quiet']).code, 0);
  const a = await readShards(pq);
  const b = await readShards(js);
  assert.deepEqual(a, b);
  assert.deepEqual(
    a.map((r) => r.source),
    [1, 3, 7],
  );
  const line = JSON.parse(readFileSync(join(js, 'train-00000.jsonl'), 'utf8').split('\n')[0] as string) as Record<string, unknown>;
  assert.deepEqual(Object.keys(line), ['input_ids', 'labels', 'source']);
});

test('packed shards carry position_ids, seq_lengths and sources', async () => {
  const model = buildFixture('qwen3');
  const out = join(tempRoot(), 'prep-packed');
  const r = run(['prepare', '--model', model, '--data', dataFile(), '--out', out, '--packing', '--max-length', '128', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rows = await readShards(out);
  assert.equal(rows.length, 1, 'three short examples fit one row of 128');
  const row = rows[0]!;
  assert.deepEqual([...(row.sources ?? [])].sort(), [1, 3, 7]);
  assert.equal(
    (row.seqLengths ?? []).reduce((x, y) => x + y, 0),
    row.inputIds.length,
  );
  assert.equal(row.positionIds?.filter((p) => p === 0).length, 3);
});

test('bad usage and bad input exit 2 with a clear message and leave no output', () => {
  const model = buildFixture('qwen3');
  const out = join(tempRoot(), 'never');
  const missing = run(['prepare', '--model', model, '--data', join(tempRoot(), 'nope.jsonl'), '--out', out]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /error\[FILE_MISSING\] .*nope\.jsonl: data file not found/);
  assert.equal(existsSync(out), false);

  const badModel = join(tempRoot(), 'bad-model');
  writeFileSync(join(tempRoot(), 'x'), '');
  const noTok = run(['prepare', '--model', badModel, '--data', dataFile(), '--out', out]);
  assert.equal(noTok.code, 2);
  assert.match(noTok.stderr, /error\[FILE_MISSING\]/);

  // A template that cannot close turns fails the whole run, and nothing is left behind.
  const noEot = buildFixture('qwen3', { config: { chat_template: '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}' } });
  const r = run(['prepare', '--model', noEot, '--data', dataFile(), '--out', out]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error\[TEMPLATE_NO_EOT\].*no line of .* yields labels/);
  assert.equal(existsSync(out), false);
  assert.deepEqual(
    readdirSync(tempRoot()).filter((f) => f.includes('partial')),
    [],
  );

  const unknownKey = run(['prepare', '--model', model, '--data', dataFile(), '--out', out, '--pad', 'eos', '--padding-side', 'middle']);
  assert.equal(unknownKey.code, 2);
});

test('config files: unknown keys are errors with the nearest valid key, all reported at once', () => {
  const cfg = join(tempRoot(), 'sft.yaml');
  writeFileSync(cfg, 'max_lenght: 512\nlr: -1\nlora:\n  rank: 8\n');
  const r = run(['prepare', '--config', cfg, '--data', dataFile(), '--out', join(tempRoot(), 'c')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /max_lenght: unknown key \(did you mean 'max_length'\?\)/);
  assert.match(r.stderr, /lr: /);
  assert.match(r.stderr, /lora\.rank: unknown key \(did you mean 'r'\?\)/);
});

test('inspect shows trained tokens and the EOT, and writes a self-contained HTML page', () => {
  const model = buildFixture('mistral-chatml');
  const html = join(tempRoot(), 'inspect.html');
  const r = run(['inspect', '--model', model, '--data', dataFile(), '--index', '1', '--html', html]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\[\[1 2 3\]\]\{\{<\|im_end\|>\}\}/);
  assert.match(r.stdout, /<\|im_end\|> \(32000\) supervised/);
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no ANSI when NO_COLOR is set / not a TTY');
  const page = readFileSync(html, 'utf8');
  assert.match(page, /<span class="eot"[^>]*>&lt;\|im_end\|&gt;<\/span>/);
  assert.doesNotMatch(page, /<script|https?:\/\//, 'self-contained');

  // With pad = eos chatsft's labels are unchanged: the EOT is still trained.
  const eos = run(['inspect', '--model', model, '--data', dataFile(), '--index', '1', '--pad', 'eos', '--padding-side', 'left', '--json']);
  assert.equal(eos.code, 0, eos.stderr);
  const views = (JSON.parse(eos.stdout) as { examples: Array<{ turns: Array<{ eotSupervised: boolean }> }> }).examples;
  assert.deepEqual(
    views[0]?.turns.map((t) => t.eotSupervised),
    [true, true],
  );
});
