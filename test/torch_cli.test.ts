/**
 * `--engine torch` failure paths through the real CLI: no usable PyTorch is
 * one ENGINE_UNAVAILABLE error with the install hint; bad weights are the
 * worker's MODEL_INVALID; a crash inside the worker is ENGINE_ERROR naming
 * the log that holds the traceback; no Python traceback ever reaches the
 * screen. `doctor --engine torch` reports the runtime.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../src/engine/safetensors.js';
import { generateDemoData, renderChatml, toJsonl } from '../src/demo/data.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { cleanupTemp, tempRoot, REPO_ROOT } from './helpers/fixtures.js';

const PY = '/usr/bin/python3';
const hasTorch = spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const SKIP = `${PY} cannot import torch (apt-get install python3-torch libopenblas0-pthread): torch engine paths not checked`;
const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

let model = '';
let data = '';

before(async () => {
  const d = generateDemoData({ seed: 2, train: 16, heldout: 2, task: 'A' });
  model = join(tempRoot(), 'model');
  const info = await writeDemoModelFolder(model, d.train.map(renderChatml), { vocabSize: 300 });
  writeFileSync(
    join(model, 'config.json'),
    JSON.stringify({
      model_type: 'llama',
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: info.vocabSize,
      tie_word_embeddings: true,
    }),
  );
  data = join(tempRoot(), 'train.jsonl');
  writeFileSync(data, toJsonl(d.train));
});
after(cleanupTemp);

const base = (out: string): string[] => [
  'train',
  '--model',
  model,
  '--data',
  data,
  '--output-dir',
  out,
  '--max-steps',
  '1',
  '--batch-size',
  '4',
  '--engine',
  'torch',
  '--quiet',
];

test('torch flags without --engine torch are a usage error', () => {
  const r = run(['train', '--model', model, '--data', data, '--output-dir', join(tempRoot(), 'u'), '--nproc', '2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error\[USAGE\] --nproc needs --engine torch/);
});

test('no usable PyTorch: one ENGINE_UNAVAILABLE error with the install hint', () => {
  const r = run([...base(join(tempRoot(), 'np')), '--python', join(tempRoot(), 'no-such-python')]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^error\[ENGINE_UNAVAILABLE\] .*apt-get install python3-torch libopenblas0-pthread.*pip install torch/);
  const d = run(['doctor', '--model', model, '--engine', 'torch', '--python', join(tempRoot(), 'no-such-python'), '--json']);
  assert.equal(d.code, 1, 'doctor: an error finding');
  const f = (JSON.parse(d.stdout) as { findings: { code: string; severity: string; hint: string }[] }).findings.find(
    (x) => x.code === 'ENGINE_UNAVAILABLE',
  );
  assert.equal(f?.severity, 'error');
  assert.match(f!.hint, /python3-torch/);
});

test('doctor --engine torch reports python, torch version, device and bf16', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const d = run(['doctor', '--model', model, '--engine', 'torch', '--json']);
  const torchVersion = spawnSync(PY, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).stdout.trim();
  const f = (JSON.parse(d.stdout) as { findings: { code: string; evidence: Record<string, unknown> }[] }).findings.find(
    (x) => x.code === 'ENGINE_READY',
  );
  assert.ok(f, d.stdout);
  assert.equal(f.evidence['torch'], torchVersion);
  assert.equal(f.evidence['python'], PY);
  assert.ok(['cpu', 'cuda'].includes(String(f.evidence['device'])));
  assert.equal(typeof f.evidence['bf16'], 'boolean');
});

test('weights that do not fit the config: the worker says MODEL_INVALID, no traceback on screen', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  const bad = join(tempRoot(), 'bad-model');
  cpSync(model, bad, { recursive: true });
  writeSafetensors(
    join(bad, 'model.safetensors'),
    new Map([['model.embed_tokens.weight', { shape: [3, 16], data: new Float32Array(48) }]]),
  );
  const r = run([...base(join(tempRoot(), 'bad')), '--model', bad]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error\[MODEL_INVALID\] .*missing tensor 'model.layers.0.input_layernorm.weight'/);
  assert.match(r.stderr, /torch worker log: .*torch-worker\.log/);
  assert.doesNotMatch(r.stderr, /Traceback/);
});

test('a crash inside the worker: ENGINE_ERROR naming the log, the traceback only in the log', (t) => {
  if (!hasTorch) return t.skip(SKIP);
  // An interpreter whose worker fails in the middle of training (the probe still works).
  const wrapper = join(tempRoot(), 'python-crash');
  writeFileSync(
    wrapper,
    `#!/bin/sh\nif [ "$3" = probe ]; then exec ${PY} "$@"; fi\nshift 2\nexec ${PY} -c 'import sys, chatsft_worker.train as t\ndef boom(r): raise ZeroDivisionError("injected")\nt.train = boom\nfrom chatsft_worker.worker import main\nsys.exit(main(sys.argv[1:]))' "$@"\n`,
  );
  chmodSync(wrapper, 0o755);
  const out = join(tempRoot(), 'crash');
  const r = run([...base(out), '--python', wrapper]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error\[ENGINE_ERROR\] ZeroDivisionError: injected \(torch worker log: .*torch-worker\.log\)/);
  assert.doesNotMatch(r.stderr, /Traceback/);
  const log = readFileSync(join(out, 'torch-worker.log'), 'utf8');
  assert.match(log, /Traceback[\s\S]*ZeroDivisionError: injected/);
});
