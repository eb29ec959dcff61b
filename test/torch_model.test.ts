/**
 * The torch worker's decoder against the float64 reference of
 * test/reference/llama_ref.py on every supported layout (GQA, llama3
 * rope_scaling, Qwen2 q/k/v bias, Llama attention_bias, Mistral, Qwen3 q/k
 * norm + head_dim + tied head), padded and packed batches:
 * test/reference/worker_check.py does the comparing; here the bounds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { WORKER_PATH } from '../src/torch/python.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const PY = '/usr/bin/python3';
const hasTorch = spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

test('torch worker decoder equals the float64 reference on every layout (logits within 1e-4, summed CE within 1e-6 relative)', (t) => {
  if (!hasTorch)
    return t.skip(`${PY} cannot import torch (apt-get install python3-torch libopenblas0-pthread): worker decoder not checked`);
  const script = path.join(REPO_ROOT, 'test', 'reference', 'worker_check.py');
  const out = execFileSync(PY, [script], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: WORKER_PATH } });
  const results = JSON.parse(out) as { name: string; max_logit_diff: number; loss_rel_diff: number }[];
  assert.equal(results.length, 6);
  for (const r of results) {
    assert.ok(r.max_logit_diff < 1e-4, `${r.name}: max |Δlogit| ${r.max_logit_diff}`);
    assert.ok(r.loss_rel_diff < 1e-6, `${r.name}: relative ΔCE ${r.loss_rel_diff}`);
  }
});
