/**
 * `chatsft train` through the real CLI: from a YAML config and from a folder
 * written by `chatsft prepare`; the output is a complete model folder whose
 * stop ids include the EOT; a prepared folder from another tokenizer setup
 * is refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupTemp, tempRoot, REPO_ROOT } from './helpers/fixtures.js';
import { generateDemoData, renderChatml, toJsonl } from '../src/demo/data.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

let model = '';
let data = '';
let imEnd = -1;

before(async () => {
  const { train, heldout } = generateDemoData({ seed: 5, train: 60, heldout: 8, task: 'A' });
  model = join(tempRoot(), 'model');
  const info = await writeDemoModelFolder(model, [...train, ...heldout].map(renderChatml), { vocabSize: 400 });
  imEnd = info.ids.imEnd;
  writeFileSync(
    join(model, 'config.json'),
    JSON.stringify({
      model_type: 'llama',
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      vocab_size: info.vocabSize,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: true,
      max_position_embeddings: 256,
    }),
  );
  data = join(tempRoot(), 'train.jsonl');
  writeFileSync(data, toJsonl(train));
  writeFileSync(join(tempRoot(), 'heldout.jsonl'), toJsonl(heldout));
});
after(cleanupTemp);

test('train --config sft.yaml writes a complete model folder whose stop ids include the EOT', () => {
  const out = join(tempRoot(), 'run-yaml');
  const cfg = join(tempRoot(), 'sft.yaml');
  writeFileSync(
    cfg,
    [
      `model: ${model}`,
      `data: { train: ${data}, eval: ${join(tempRoot(), 'heldout.jsonl')} }`,
      'max_steps: 3',
      'batch_size: 8',
      'lr: 0.003',
      `output_dir: ${out}`,
      'seed: 1',
    ].join('\n'),
  );
  const r = run(['train', '--config', cfg, '--json', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { steps: number; losses: number[]; supervisedEot: number; evalLoss: number | null };
  assert.equal(result.steps, 3);
  assert.equal(result.losses.length, 3);
  assert.ok(result.supervisedEot > 0);
  assert.ok(result.evalLoss !== null && Number.isFinite(result.evalLoss));
  for (const f of [
    'model.safetensors',
    'config.json',
    'tokenizer.json',
    'tokenizer_config.json',
    'generation_config.json',
    'metrics.jsonl',
    'loss.svg',
  ]) {
    assert.ok(existsSync(join(out, f)), f);
  }
  const gen = JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
  assert.ok(gen.eos_token_id.includes(imEnd), 'the EOT is a stop id');
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual([...new Set(steps)], [1, 2, 3]);
});

test('train on a prepared folder; a folder prepared with another tokenizer is refused', () => {
  const prepared = join(tempRoot(), 'prepared');
  const p = run(['prepare', '--model', model, '--data', data, '--out', prepared, '--quiet']);
  assert.equal(p.code, 0, p.stderr);
  const out = join(tempRoot(), 'run-prepared');
  // --eval-samples 0: no slice held out for the stop rate, so every prepared row trains.
  const r = run([
    'train',
    '--model',
    model,
    '--data',
    prepared,
    '--output-dir',
    out,
    '--max-steps',
    '2',
    '--batch-size',
    '4',
    '--eval-samples',
    '0',
    '--json',
    '--quiet',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { steps: number; supervisedEot: number };
  const manifest = JSON.parse(readFileSync(join(prepared, 'manifest.json'), 'utf8')) as {
    supervised_eot: number;
    tokenizer_sha256: string;
  };
  assert.equal(result.steps, 2);
  assert.equal(result.supervisedEot, manifest.supervised_eot, 'the trainer counts the EOT the manifest recorded');

  // The saved folder carries the template the data were prepared with.
  const savedTemplate = (JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')) as { chat_template: string }).chat_template;
  const preparedTemplate = (manifest as unknown as { template: { source: string } }).template.source;
  assert.equal(savedTemplate, preparedTemplate);

  // The same template text plus a comment: renders identically, but it is not the template the data were prepared with.
  const otherTemplate = join(tempRoot(), 'other.jinja');
  writeFileSync(otherTemplate, '{# another template #}' + preparedTemplate);
  // Each prepared-with setting that differs from the config is refused, naming the field.
  for (const [flags, field] of [
    [['--train-on', 'last'], 'train_on'],
    [['--max-length', '64'], 'max_length'],
    [['--packing'], 'packing'],
    [['--template', otherTemplate], 'template'],
  ] as const) {
    const r2 = run([
      'train',
      '--model',
      model,
      '--data',
      prepared,
      '--output-dir',
      join(tempRoot(), 'never'),
      '--max-steps',
      '1',
      ...flags,
    ]);
    assert.equal(r2.code, 2, `${field}: ${r2.stderr}`);
    assert.match(r2.stderr, new RegExp(`error\\[CONFIG_INVALID\\].*${field}: prepared with`), field);
  }
  const { pad_token: _p, ...noPad } = manifest as unknown as Record<string, unknown>;
  writeFileSync(join(prepared, 'manifest.json'), JSON.stringify(noPad));
  const corrupt = run(['train', '--model', model, '--data', prepared, '--output-dir', join(tempRoot(), 'never'), '--max-steps', '1']);
  assert.equal(corrupt.code, 2);
  assert.match(corrupt.stderr, /error\[FILE_CORRUPT\].*pad_token/);

  writeFileSync(join(prepared, 'manifest.json'), JSON.stringify({ ...manifest, tokenizer_sha256: 'other' }));
  const bad = run(['train', '--model', model, '--data', prepared, '--output-dir', join(tempRoot(), 'never'), '--max-steps', '1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error\[CONFIG_INVALID\].*another tokenizer/);
  assert.equal(existsSync(join(tempRoot(), 'never', 'model.safetensors')), false);
});

test('train measures the stop rate at each evaluation: metrics.jsonl, loss.svg, --json and the report carry it', () => {
  const out = join(tempRoot(), 'run-stop');
  const args = [
    'train',
    '--model',
    model,
    '--data',
    data,
    '--output-dir',
    out,
    '--max-steps',
    '4',
    '--batch-size',
    '8',
    '--eval-every-steps',
    '2',
    '--eval-samples',
    '4',
    '--eval-max-new-tokens',
    '6',
  ];
  const r = run([...args, '--json', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as {
    stopRates: Array<{ step: number; stop_rate: number; mean_new_tokens: number; runaway_new_turn: number }>;
  };
  assert.deepEqual(
    result.stopRates.map((p) => p.step),
    [2, 4],
    'every_steps and the end',
  );
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  for (const l of lines) {
    const measured = l['step'] === 2 || l['step'] === 4;
    assert.equal('stop_rate' in l, measured, `step ${l['step']}`);
    if (!measured) continue;
    assert.ok(l['stop_rate']! >= 0 && l['stop_rate']! <= 1);
    // max_new_tokens is read: no generation is longer than the budget.
    assert.ok(l['mean_new_tokens']! >= 0 && l['mean_new_tokens']! <= 6, String(l['mean_new_tokens']));
    assert.ok(l['runaway_new_turn']! >= 0 && l['runaway_new_turn']! <= 1 - l['stop_rate']! + 1e-9);
  }
  const svg = readFileSync(join(out, 'loss.svg'), 'utf8');
  assert.match(svg, /stop rate on held-out prompts/);
  assert.match(svg, />4<\/text>/, 'labelled step ticks');
  const text = run([...args.slice(0, 6), join(tempRoot(), 'run-stop-text'), ...args.slice(7), '--quiet']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /stop rate on held-out prompts \d+% → \d+% \(step 2, 4\)/);
});
