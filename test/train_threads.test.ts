/**
 * The trainer's wasm thread choice is passed to initEngine, never written
 * into process.env (which every other library in the process would see).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { ConfigSchema } from '../src/config/schema.js';
import { chooseWasmThreads } from '../src/train/from-config.js';
import { cleanupTemp, tempRoot } from './helpers/fixtures.js';

after(cleanupTemp);

test('chooseWasmThreads returns a count for large models, leaves small ones and a user setting alone, and writes no env', () => {
  const cfgFile = (name: string, hidden: number, vocab: number): string => {
    const f = join(tempRoot(), name);
    writeFileSync(
      f,
      JSON.stringify({
        model_type: 'llama',
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        num_hidden_layers: 2,
        num_attention_heads: 4,
      }),
    );
    return f;
  };
  const big = ConfigSchema.parse({ model_config: cfgFile('big.json', 256, 32000) });
  const small = ConfigSchema.parse({ model_config: cfgFile('small.json', 16, 100) });
  const env: NodeJS.ProcessEnv = {};
  const before = process.env['CHATSFT_WASM_THREADS'];
  assert.equal(chooseWasmThreads(big, env), availableParallelism() >= 2 ? Math.min(availableParallelism(), 4) : undefined);
  assert.equal(chooseWasmThreads(small, env), undefined);
  assert.equal(chooseWasmThreads(big, { CHATSFT_WASM_THREADS: '1' }), undefined, "the user's setting wins (initEngine reads it)");
  assert.deepEqual(env, {});
  assert.equal(process.env['CHATSFT_WASM_THREADS'], before);
});
