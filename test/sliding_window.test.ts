/**
 * Mistral's sliding_window: the engine attends over the whole prefix, so a
 * sequence longer than the window is refused (training rows and generation),
 * never silently computed differently from the model's own attention.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSlidingWindow, parseLlamaConfig } from '../src/hf/config.js';
import { ChatsftError } from '../src/errors.js';

const base = {
  vocab_size: 32,
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};

test('sliding_window is read for Mistral, for Qwen2 only with use_sliding_window, and refused past the window', () => {
  assert.equal(parseLlamaConfig({ ...base, model_type: 'mistral', sliding_window: 16 }).slidingWindow, 16);
  assert.equal(parseLlamaConfig({ ...base, model_type: 'mistral', sliding_window: null }).slidingWindow, null);
  assert.equal(
    parseLlamaConfig({ ...base, model_type: 'qwen2', sliding_window: 16 }).slidingWindow,
    null,
    'Qwen2 ignores it unless use_sliding_window',
  );
  assert.equal(parseLlamaConfig({ ...base, model_type: 'qwen2', sliding_window: 16, use_sliding_window: true }).slidingWindow, 16);
  const c = parseLlamaConfig({ ...base, model_type: 'mistral', sliding_window: 16 });
  checkSlidingWindow(c, 16, 'rows');
  assert.throws(
    () => checkSlidingWindow(c, 17, 'training rows'),
    (e: unknown) =>
      e instanceof ChatsftError && e.code === 'CONFIG_INVALID' && /training rows reach 17 tokens.*sliding_window of 16/.test(e.message),
  );
  checkSlidingWindow(parseLlamaConfig({ ...base, model_type: 'llama' }), 10_000, 'rows');
});

test('generation refuses prompt + max_new_tokens past the window', async () => {
  const { initEngine, createModel } = await import('../src/engine/index.js');
  const { engineStepModel, generate } = await import('../src/generate/index.js');
  await initEngine();
  const model = createModel(parseLlamaConfig({ ...base, model_type: 'mistral', sliding_window: 8 }), 0);
  await assert.rejects(generate(engineStepModel(model), [[1, 2, 3]], { maxNewTokens: 6, stopIds: [0] }), /sliding_window of 8/);
  const [r] = await generate(engineStepModel(model), [[1, 2, 3]], { maxNewTokens: 5, stopIds: [0] });
  assert.ok(r!.tokens.length <= 5);
});
