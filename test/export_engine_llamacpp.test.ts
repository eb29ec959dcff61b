/**
 * chatsft's own generator (tfjs engine + KV cache) and llama.cpp, on the same
 * weights exported to GGUF, produce the same greedy tokens and stop at the
 * same EOT. The model uses the demo tokenizer (GPT-2 byte-level BPE +
 * ChatML), as `chatsft demo` does, with weights scaled up so logits are well
 * separated (no near-ties for f32 rounding to flip).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initEngine, loadModel, writeSafetensors, disposeModel } from '../src/engine/index.js';
import { engineStepModel } from '../src/generate/engine.js';
import { generate } from '../src/generate/loop.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { exportGguf } from '../src/export/gguf.js';
import { llamaCppUnavailable } from './helpers/llamacpp.js';
import { generateWithLlamaCpp, openLlamaCpp } from '../src/export/llamacpp.js';

let tmp = '';
let llamaError: string | null = null;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-eng-llamacpp-'));
  llamaError = await llamaCppUnavailable();
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test(
  'engine greedy generation = llama.cpp greedy generation on the exported GGUF, including the stop',
  {
    skip: llamaError ? `node-llama-cpp prebuilt binary did not load here: ${llamaError}` : false,
  },
  async () => {
    await initEngine();
    const dir = path.join(tmp, 'model');
    const corpus = Array.from(
      { length: 40 },
      (_, i) =>
        `<|im_start|>user\nCount to ${i}.<|im_end|>\n<|im_start|>assistant\n${Array.from({ length: (i % 7) + 1 }, (_, k) => k + 1).join(', ')}.<|im_end|>\n`,
    );
    const info = await writeDemoModelFolder(dir, corpus, { vocabSize: 300 });
    const V = info.vocabSize;
    const d = 64,
      H = 4,
      KV = 2,
      hd = 16,
      F = 128,
      L = 2;
    fs.writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        vocab_size: V,
        hidden_size: d,
        intermediate_size: F,
        num_hidden_layers: L,
        num_attention_heads: H,
        num_key_value_heads: KV,
        head_dim: hd,
        rms_norm_eps: 1e-6,
        rope_theta: 10000,
        max_position_embeddings: 256,
        tie_word_embeddings: false,
        eos_token_id: info.ids.imEnd,
      }),
    );
    let s = 99;
    const rnd = (): number => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s / 2 ** 32 - 0.5;
    };
    const rand = (shape: number[], std: number): { shape: number[]; data: Float32Array } => ({
      shape,
      data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * std * 3.46),
    });
    const ones = (n: number): { shape: number[]; data: Float32Array } => ({ shape: [n], data: new Float32Array(n).fill(1) });
    const w = new Map([
      ['model.embed_tokens.weight', rand([V, d], 1)],
      ['lm_head.weight', rand([V, d], 3 / Math.sqrt(d))],
      ['model.norm.weight', ones(d)],
    ]);
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}.`;
      w.set(p + 'input_layernorm.weight', ones(d));
      w.set(p + 'post_attention_layernorm.weight', ones(d));
      w.set(p + 'self_attn.q_proj.weight', rand([H * hd, d], 2 / Math.sqrt(d)));
      w.set(p + 'self_attn.k_proj.weight', rand([KV * hd, d], 2 / Math.sqrt(d)));
      w.set(p + 'self_attn.v_proj.weight', rand([KV * hd, d], 1 / Math.sqrt(d)));
      w.set(p + 'self_attn.o_proj.weight', rand([d, H * hd], 1 / Math.sqrt(H * hd)));
      w.set(p + 'mlp.gate_proj.weight', rand([F, d], 1 / Math.sqrt(d)));
      w.set(p + 'mlp.up_proj.weight', rand([F, d], 1 / Math.sqrt(d)));
      w.set(p + 'mlp.down_proj.weight', rand([d, F], 1 / Math.sqrt(F)));
    }
    // Make the head favour <|im_end|> after the token '.', so some generations stop.
    const dot = 46; // byte symbol '.' has id 46 in the demo vocabulary (ids 0-255 are bytes)
    const E = w.get('model.embed_tokens.weight')!.data;
    const Hd = w.get('lm_head.weight')!.data;
    for (let i = 0; i < d; i++) Hd[info.ids.imEnd * d + i] = E[dot * d + i]! * 0.6;
    writeSafetensors(path.join(dir, 'model.safetensors'), w);

    const file = path.join(tmp, 'model.gguf');
    exportGguf(dir, file, { eotToken: '<|im_end|>', dtype: 'f32' });
    const runner = await openLlamaCpp(file, 64, { threads: 1 });
    const texts = ['Count to 3.', 'Count to 12.', 'Hello there', 'What is 2 + 2?', 'Say something.', 'Count to 5.'];
    const prompts = texts.map((t) => runner.tokenize(`<|im_start|>user\n${t}<|im_end|>\n<|im_start|>assistant\n`));
    await runner.close();

    const maxNewTokens = 16;
    const stopIds = [info.ids.imEnd];
    const model = loadModel(dir);
    let ours;
    try {
      ours = await generate(engineStepModel(model), prompts, { maxNewTokens, stopIds });
    } finally {
      disposeModel(model);
    }
    const theirs = await generateWithLlamaCpp(file, prompts, { maxNewTokens, stopIds, threads: 1 });
    const firstN = 8;
    for (let i = 0; i < prompts.length; i++) {
      assert.deepEqual(theirs[i]!.tokens.slice(0, firstN), ours[i]!.tokens.slice(0, firstN), `prompt ${i}: first ${firstN} greedy tokens`);
    }
    const same = ours.filter((r, i) => JSON.stringify(r) === JSON.stringify(theirs[i])).length;
    assert.ok(same >= prompts.length - 1, `only ${same}/${prompts.length} generations identical`);
    assert.ok(
      ours.some((r) => r.stoppedBy === info.ids.imEnd),
      'the rig makes at least one generation stop on <|im_end|>',
    );
    // With llama.cpp's own end-of-generation set (no explicit stop ids) it stops at the same place.
    const native = await generateWithLlamaCpp(file, prompts, { maxNewTokens, threads: 1 });
    for (let i = 0; i < prompts.length; i++) {
      if (ours[i]!.stoppedBy === info.ids.imEnd) assert.deepEqual(native[i], ours[i], `prompt ${i}`);
    }
  },
);
