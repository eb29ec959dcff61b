/**
 * Model families are one descriptor each (src/hf/families.ts): config
 * parsing, the engine's parameter shapes and the GGUF mapping follow its
 * fields for every family, and `export --format` dispatches over one
 * exporter table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FAMILIES, MODEL_TYPES } from '../src/hf/families.js';
import { makeLlamaConfig, parseLlamaConfig, toHfConfig } from '../src/hf/config.js';
import { expectedShapes } from '../src/engine/model.js';
import { ggufArch, ggufTensors } from '../src/export/gguf-tensors.js';
import { EXPORTERS } from '../src/export/exporter.js';

const tiny = (modelType: (typeof MODEL_TYPES)[number], attentionBias?: boolean) =>
  makeLlamaConfig({
    modelType,
    vocabSize: 16,
    hiddenSize: 8,
    intermediateSize: 16,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    ...(attentionBias === undefined ? {} : { attentionBias }),
  });

for (const mt of MODEL_TYPES) {
  const f = FAMILIES[mt];
  test(`${mt}: config, shapes and GGUF mapping follow the family descriptor`, () => {
    const c = tiny(mt);
    assert.equal(c.attentionBias, f.attentionBiasDefault, 'attention_bias default');
    assert.equal(c.qkNorm, f.qkNorm);
    assert.equal((toHfConfig(c)['architectures'] as string[])[0], f.hfArchitecture);
    // sliding_window applies per the family's rule.
    const sw = parseLlamaConfig({ ...toHfConfig(c), sliding_window: 4 });
    assert.equal(sw.slidingWindow, f.slidingWindow === 'always' ? 4 : null);
    const swOn = parseLlamaConfig({ ...toHfConfig(c), sliding_window: 4, use_sliding_window: true });
    assert.equal(swOn.slidingWindow, f.slidingWindow === 'never' ? null : 4);

    const biased = tiny(mt, true);
    const shapes = expectedShapes(biased);
    const p = 'model.layers.0.self_attn.';
    assert.equal(shapes.has(p + 'q_norm.weight'), f.qkNorm);
    assert.ok(shapes.has(p + 'q_proj.bias'));
    assert.equal(shapes.has(p + 'o_proj.bias'), f.oProjBias);

    assert.equal(ggufArch(c), f.gguf.arch);
    const hf = new Map([...expectedShapes(c)].map(([n, s]) => [n, { shape: s, data: new Float32Array(s.reduce((a, b) => a * b, 1)) }]));
    const names = ggufTensors(c, hf, 'f32').map((t) => t.name);
    assert.equal(names.includes('blk.0.attn_q.bias'), f.gguf.requiresQkvBias || c.attentionBias, 'q bias present when required');
    assert.equal(names.includes('blk.0.attn_q_norm.weight'), f.qkNorm);
    const withBias = new Map(
      [...expectedShapes(biased)].map(([n, s]) => [n, { shape: s, data: new Float32Array(s.reduce((a, b) => a * b, 1)) }]),
    );
    if (f.gguf.forbidsBias) assert.throws(() => ggufTensors(biased, withBias, 'f32'), /no attention biases/);
    else assert.ok(ggufTensors(biased, withBias, 'f32').some((t) => t.name === 'blk.0.attn_q.bias'));
  });
}

test('an unknown model_type names the supported families', () => {
  assert.throws(
    () => parseLlamaConfig({ ...toHfConfig(tiny('llama')), model_type: 'gpt2' }),
    (e: Error) => MODEL_TYPES.every((m) => e.message.includes(m)),
  );
});

test('every exporter is filed under its own format and takes its default dtype', () => {
  for (const [k, e] of Object.entries(EXPORTERS)) {
    assert.equal(e.format, k);
    assert.ok(e.dtypes.includes(e.defaultDtype));
  }
});
