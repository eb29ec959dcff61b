import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createModel, disposeModel, initEngine, makeLlamaConfig, tf, type LlamaModel } from '../src/engine/index.js';
import { engineNoCacheStepModel, engineStepModel, generate, type StepModel } from '../src/generate/index.js';

const V = 48;

async function tinyModel(): Promise<LlamaModel> {
  await initEngine();
  const config = makeLlamaConfig({
    vocabSize: V,
    hiddenSize: 32,
    intermediateSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
  });
  const model = createModel(config, 7);
  // Fresh weights give near-uniform logits, where float noise could flip an
  // argmax; a larger head spreads them so the comparison is meaningful.
  const head = model.params.get('lm_head.weight');
  assert.ok(head, 'lm_head.weight');
  tf.tidy(() => head.assign(tf.mul(head, 60)));
  return model;
}

/** Wraps a StepModel and keeps every logits block it returns. */
function recording(inner: StepModel, log: Float32Array[]): StepModel {
  return {
    vocabSize: inner.vocabSize,
    start: (p, limits) => {
      const out = inner.start(p, limits);
      log.push(out);
      return out;
    },
    step: (r, t) => {
      const out = inner.step(r, t);
      log.push(out);
      return out;
    },
    dispose: () => inner.dispose(),
  };
}

const prompts = [[1, 2, 3, 4, 5], [7], [9, 8, 7], [20, 21, 22, 23, 24, 25, 26]];

test('KV-cache generation equals full recomputation (logits and tokens), with rows stopping at different times', async () => {
  const model = await tinyModel();
  try {
    // A first run without stop ids picks a stop id that ends some rows early.
    const free = await generate(engineNoCacheStepModel(model), prompts, { maxNewTokens: 10, stopIds: [] });
    const stopId = free[0]!.tokens[2]!;
    for (const sampling of [{}, { temperature: 0.8, topK: 10, seed: 5 }]) {
      const opts = { maxNewTokens: 10, stopIds: [stopId], ...sampling };
      const refLog: Float32Array[] = [];
      const kvLog: Float32Array[] = [];
      const reference = await generate(recording(engineNoCacheStepModel(model), refLog), prompts, opts);
      const cached = await generate(recording(engineStepModel(model), kvLog), prompts, opts);
      assert.deepEqual(cached, reference);
      assert.equal(kvLog.length, refLog.length);
      kvLog.forEach((block, i) => {
        const ref = refLog[i]!;
        assert.equal(block.length, ref.length, `call ${i}`);
        let maxDiff = 0;
        for (let j = 0; j < ref.length; j++) maxDiff = Math.max(maxDiff, Math.abs(block[j]! - ref[j]!));
        assert.ok(maxDiff < 1e-3, `call ${i}: max |diff| ${maxDiff}`);
      });
    }
    // Under greedy decoding row 0 stops at its third token, so the batch shrank mid-run.
    const greedy = await generate(engineStepModel(model), prompts, { maxNewTokens: 10, stopIds: [stopId] });
    assert.equal(greedy[0]!.stoppedBy, stopId);
    assert.ok(greedy[0]!.tokens.length <= 2);
    assert.ok(
      greedy.some((r) => r.tokens.length > 2),
      'some row ran longer',
    );
  } finally {
    disposeModel(model);
  }
});

test('generation leaks no tensors', async () => {
  const model = await tinyModel();
  try {
    await generate(engineStepModel(model), prompts, { maxNewTokens: 4, stopIds: [] }); // warm-up
    const before = tf.memory().numTensors;
    await generate(engineStepModel(model), prompts, { maxNewTokens: 6, stopIds: [3, 5] });
    await generate(engineStepModel(model), [[1]], { maxNewTokens: 6, stopIds: [] });
    assert.equal(tf.memory().numTensors, before);
  } finally {
    disposeModel(model);
  }
});
