/**
 * The opt-in multithreaded wasm backend (CHATSFT_WASM_THREADS): its worker
 * threads start in Node, the process still exits on its own, and training
 * numbers are bit-identical to one thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const engine = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'engine', 'index.js');
const backend = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'engine', 'backend.js');

const script = `
const e = await import(${JSON.stringify(engine)});
const { wasmThreads } = await import(${JSON.stringify(backend)});
const { collate } = await import(${JSON.stringify(path.join(path.dirname(engine), '..', 'batch', 'collate.js'))});
await e.initEngine();
const model = e.createModel(e.makeLlamaConfig({ vocabSize: 300, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2 }), 1);
const rows = Array.from({ length: 4 }, (_, i) => { const ids = Array.from({ length: 40 }, (_, j) => (i * 37 + j * 11) % 300); return { inputIds: ids, labels: ids }; });
const batch = collate(rows, { padId: 0, paddingSide: 'right' });
const opt = e.createAdamW(new Map(model.params));
const losses = [];
for (let s = 0; s < 3; s++) losses.push(e.trainStep(model, [batch], opt, 1e-3, { ...e.ADAMW_DEFAULTS, maxGradNorm: 1 }).loss);
console.log(JSON.stringify({ threads: await wasmThreads(), losses }));
`;

function run(threads: string): { threads: number; losses: number[] } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, CHATSFT_WASM_THREADS: threads },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `exit ${r.status} signal ${r.signal} (a hang shows as SIGTERM): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { threads: number; losses: number[] };
}

test('CHATSFT_WASM_THREADS=2 starts two XNNPACK threads, exits, and matches one thread exactly', () => {
  const one = run('1');
  const two = run('2');
  assert.equal(one.threads, 1);
  assert.equal(two.threads, 2);
  assert.deepEqual(two.losses, one.losses);
});
