/** Progress inside a training step: the engine's tick callback, in order (issue 11: "progress from the first second"). */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { collate } from '../src/batch/collate.js';
import { initEngine, tf } from '../src/engine/backend.js';
import { makeLlamaConfig } from '../src/hf/config.js';
import { createModel, disposeModel } from '../src/engine/model.js';
import { Rng } from '../src/engine/rng.js';
import { accumulateGradients } from '../src/engine/step.js';
import type { StepTick } from '../src/engine/types.js';

before(async () => {
  await initEngine();
});

const config = makeLlamaConfig({ vocabSize: 31, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 2 });
const micro = [0, 1].map((k) =>
  collate(
    [
      { inputIds: [1, 2 + k, 3, 4, 5], labels: [-100, 2 + k, 3, 4, 5] },
      { inputIds: [6, 7, 8], labels: [-100, 7, 8] },
    ],
    { padId: 0, paddingSide: 'right' },
  ),
);

function ticksOf(ckpt: boolean): string[] {
  const m = createModel(config, 1);
  m.gradientCheckpointing = ckpt;
  const seen: string[] = [];
  const onTick = (t: StepTick): void => {
    assert.equal(t.micros, 2);
    if (t.layer !== undefined) assert.equal(t.layers, 3);
    seen.push(t.layer === undefined ? `${t.phase} ${t.micro}` : `${t.micro} ${t.phase} ${t.layer}`);
  };
  const r = accumulateGradients(m, micro, new Rng(3), onTick);
  assert.ok(Number.isFinite(r.loss) && r.loss > 0);
  for (const g of r.grads.values()) g.dispose();
  disposeModel(m);
  return seen;
}

test('layer-wise step: micro-batch ticks, then each layer forward (up) and backward (down), in order', () => {
  const before = tf.memory().numTensors;
  const perMicro = (k: number): string[] => [
    `micro ${k}`,
    ...[1, 2, 3].map((l) => `${k} forward ${l}`),
    ...[3, 2, 1].map((l) => `${k} backward ${l}`),
  ];
  assert.deepEqual(ticksOf(true), [...perMicro(1), ...perMicro(2)]);
  assert.equal(tf.memory().numTensors, before);
});

test('taped step: one tick per micro-batch', () => {
  assert.deepEqual(ticksOf(false), ['micro 1', 'micro 2']);
});
