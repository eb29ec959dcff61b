/**
 * `chatsft export` end to end through the real CLI: a tiny model folder (demo
 * tokenizer, random llama weights wired so greedy generation says two tokens
 * and then the EOT) and a 2-step LoRA run of `chatsft train` on it, exported
 * to GGUF and to Hugging Face folders (f32, f16, adapter kept); the GGUF
 * is loaded in llama.cpp (node-llama-cpp's prebuilt binary), whose own
 * end-of-generation set must stop it on the EOT. The EOT is never passed on
 * the command line: it is found with the folder's chat template.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gguf } from '@huggingface/gguf';
import { Tokenizer } from 'tokenizers';
import { makeLlamaConfig, toHfConfig, writeSafetensors, readSafetensors, expectedShapes } from '../src/engine/index.js';
import { roundToF16 } from '../src/util/f16.js';
import { writeDemoModelFolder, type DemoTokenizerInfo } from '../src/demo/tokenizer.js';
import { discoverEot } from '../src/model/eot.js';
import { generateWithLlamaCpp } from '../src/export/llamacpp.js';
import { buildFixture, cleanupTemp, REPO_ROOT } from './helpers/fixtures.js';

const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

let tmp = '';
let model = '';
let trained = '';
let info: DemoTokenizerInfo;
/** Prompt (rendered ChatML up to the generation prompt) and the two tokens the rig answers with. */
const PROMPT = '<|im_start|>user\nSay OK.<|im_end|>\n<|im_start|>assistant\n';
let answer: number[] = [];
let llamaError: string | null = null;

/**
 * Weights: embeddings ~ N(0, 1) in 64 dims (rows nearly orthogonal), layers
 * at the HF init scale (0.02) so the residual stream stays close to the last
 * token's embedding, and lm_head rows chosen so that token a predicts
 * next(a): lm_head[next(a)] = 8 · E[a]. The chain is
 * last prompt token → 'O' → 'K' → <|im_end|>.
 */
async function buildModel(dir: string): Promise<void> {
  const corpus = Array.from({ length: 30 }, (_, i) => `<|im_start|>user\nSay ${i}.<|im_end|>\n<|im_start|>assistant\nOK ${i}<|im_end|>\n`);
  info = await writeDemoModelFolder(dir, corpus, { vocabSize: 300 });
  const cfg = makeLlamaConfig({
    vocabSize: info.vocabSize,
    hiddenSize: 64,
    intermediateSize: 128,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    maxPositionEmbeddings: 256,
    bosTokenId: info.ids.endoftext,
    eosTokenId: info.ids.imEnd,
  });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(cfg)));
  let s = 7;
  const rnd = (): number => {
    // Box-Muller on an LCG: reproducible N(0, 1).
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = (s + 1) / 2 ** 32;
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * s) / 2 ** 32);
  };
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const std = name === 'model.embed_tokens.weight' ? 1 : name === 'lm_head.weight' ? 0.05 : 0.02;
    w.set(name, {
      shape,
      data: name.endsWith('norm.weight') ? new Float32Array(n).fill(1) : Float32Array.from({ length: n }, () => rnd() * std),
    });
  }
  const tok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const ids = Array.from((await tok.encode(PROMPT, null, { addSpecialTokens: false })).getIds());
  const id = (t: string): number => tok.tokenToId(t) ?? assert.fail(`no token ${t}`);
  answer = [id('O'), id('K')];
  const chain = [ids[ids.length - 1]!, ...answer, info.ids.imEnd];
  const d = cfg.hiddenSize;
  const E = w.get('model.embed_tokens.weight')!.data;
  const H = w.get('lm_head.weight')!.data;
  for (let i = 0; i + 1 < chain.length; i++) {
    for (let j = 0; j < d; j++) H[chain[i + 1]! * d + j] = 8 * E[chain[i]! * d + j]!;
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), w, { format: 'pt' });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-export-cli-'));
  model = path.join(tmp, 'model');
  await buildModel(model);
  // A real LoRA run (2 steps): merged weights at the top, the PEFT adapter in adapter/.
  const data = path.join(tmp, 'chats.jsonl');
  fs.writeFileSync(
    data,
    Array.from({ length: 8 }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: 'user', content: `Say ${i}.` },
          { role: 'assistant', content: `OK ${i}` },
        ],
      }),
    ).join('\n') + '\n',
  );
  trained = path.join(tmp, 'trained');
  const t = run(['train', '--model', model, '--data', data, '--output-dir', trained, '--max-steps', '2', '--lora']);
  assert.equal(t.code, 0, t.stderr);
  try {
    const { getLlama } = await import('node-llama-cpp');
    await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' as never });
  } catch (e) {
    llamaError = (e as Error).message;
  }
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  cleanupTemp();
});

test("the EOT is found with each folder's own chat template, not assumed", async () => {
  assert.deepEqual({ ...(await discoverEot(model)), template: 'model' }, { token: '<|im_end|>', id: info.ids.imEnd, template: 'model' });
  assert.equal((await discoverEot(buildFixture('llama3'))).token, '<|eot_id|>');
  assert.equal((await discoverEot(buildFixture('gemma3'))).token, '<end_of_turn>');
  assert.equal((await discoverEot(buildFixture('qwen3'))).token, '<|im_end|>');
});

test('export --format gguf --json: metadata, then llama.cpp stops on the EOT by itself', { skip: false }, async (t) => {
  const file = path.join(tmp, 'model.gguf');
  const r = run(['export', '--model', model, '--format', 'gguf', '--out', file, '--dtype', 'f32', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(Object.keys(s).sort(), [
    'adapter',
    'arch',
    'bos_token_id',
    'bytes',
    'dtype',
    'eos_token_id',
    'eot_source',
    'eot_token',
    'eot_token_id',
    'files',
    'format',
    'out',
    'pad_token_id',
    'stop_ids',
    'warnings',
  ]);
  assert.equal(s['format'], 'gguf');
  assert.equal(s['arch'], 'llama');
  assert.equal(s['dtype'], 'f32');
  assert.equal(s['eot_token'], '<|im_end|>');
  assert.equal(s['eot_source'], 'template');
  assert.equal(s['eot_token_id'], info.ids.imEnd);
  assert.equal(s['bos_token_id'], info.ids.endoftext);
  assert.equal(s['eos_token_id'], info.ids.imEnd);
  assert.deepEqual(s['stop_ids'], [info.ids.imEnd]);
  assert.equal(s['bytes'], fs.statSync(file).size);

  const meta = (await gguf(file, { allowLocalFile: true })).metadata as unknown as Record<string, unknown>;
  assert.equal(meta['tokenizer.ggml.bos_token_id'], info.ids.endoftext);
  assert.equal(meta['tokenizer.ggml.eos_token_id'], info.ids.imEnd);
  assert.equal(meta['tokenizer.ggml.eot_token_id'], info.ids.imEnd);
  assert.equal(meta['tokenizer.ggml.add_bos_token'], false);

  await t.test('llama.cpp: greedy answer, then stops on <|im_end|> with its own stop set', { skip: llamaError ?? false }, async () => {
    const [g] = await generateWithLlamaCpp(file, [PROMPT], { maxNewTokens: 16, threads: 1 });
    assert.deepEqual(g, { tokens: answer, stoppedBy: info.ids.imEnd, hitMaxNewTokens: false });
  });

  await t.test(
    'eval --engine llama.cpp measures the stop rate of the GGUF from its own template and stop set',
    { skip: llamaError ?? false },
    () => {
      const data = path.join(tmp, 'heldout.jsonl');
      const conv = {
        messages: [
          { role: 'user', content: 'Say OK.' },
          { role: 'assistant', content: 'OK' },
        ],
      };
      fs.writeFileSync(
        data,
        [conv, conv, { messages: [{ role: 'user', content: 'no answer' }] }].map((c) => JSON.stringify(c)).join('\n') + '\n',
      );
      const r = run([
        'eval',
        '--engine',
        'llama.cpp',
        '--model',
        file,
        '--data',
        data,
        '--max-new-tokens',
        '8',
        '--threads',
        '1',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const rep = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(rep['engine'], 'llama.cpp');
      assert.equal(rep['examples'], 2);
      assert.equal(rep['skipped'], 1, 'a conversation without a final assistant turn is skipped');
      assert.equal(rep['stop_rate'], 1);
      assert.equal(rep['loss'], null);
      assert.deepEqual(rep['stopped_by'], { [String(info.ids.imEnd)]: 2 });
      assert.equal(rep['mean_new_tokens'], 2);
      const lossOnly = run(['eval', '--engine', 'llama.cpp', '--model', file, '--data', data, '--loss-only']);
      assert.equal(lossOnly.code, 2);
    },
  );

  const again = run(['export', '--model', model, '--format', 'gguf', '--out', file]);
  assert.equal(again.code, 2, 'an existing output is not replaced without --overwrite');
  assert.match(again.stderr, /error\[USAGE\].*--overwrite/);
  const f16 = run(['export', '--model', model, '--format', 'gguf', '--out', file, '--overwrite']);
  assert.equal(f16.code, 0, f16.stderr);
  assert.match(f16.stdout, /GGUF f16 {2}arch llama/);
  assert.match(f16.stdout, /eot {3}<\|im_end\|> \(\d+\) {2}\(found with the chat template\)/);
  assert.ok(fs.statSync(file).size < Number(s['bytes']), 'f16 is smaller than f32');

  const other = run([
    'export',
    '--model',
    model,
    '--format',
    'gguf',
    '--out',
    path.join(tmp, 'other.gguf'),
    '--eot',
    '<|endoftext|>',
    '--json',
  ]);
  assert.equal(other.code, 0, other.stderr);
  assert.match(
    other.stderr,
    /warning: --eot <\|endoftext\|> is not the token the chat template closes assistant turns with \(<\|im_end\|>\)/,
  );
  assert.equal((JSON.parse(other.stdout) as { warnings: string[] }).warnings.length, 1);
});

test('export --format hf of a LoRA run: stop ids with the EOT, the adapter copied to adapter/', () => {
  const out = path.join(tmp, 'hf');
  const r = run(['export', '--model', trained, '--format', 'hf', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Hugging Face folder/);
  assert.match(r.stdout, /stops <\|im_end\|> \(\d+\)/);
  assert.match(r.stdout, /adapter {2}PEFT LoRA copied/);
  const gen = JSON.parse(fs.readFileSync(path.join(out, 'generation_config.json'), 'utf8')) as Record<string, unknown>;
  assert.ok((gen['eos_token_id'] as number[]).includes(info.ids.imEnd));
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
    assert.ok(fs.readFileSync(path.join(out, 'adapter', f)).equals(fs.readFileSync(path.join(trained, 'adapter', f))), f);
  }
  assert.equal(fs.existsSync(path.join(out, 'adapter_config.json')), false, 'never next to merged weights');
  const tc = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(tc['chat_template'], JSON.parse(fs.readFileSync(path.join(model, 'tokenizer_config.json'), 'utf8'))['chat_template']);
  assert.equal(tc['pad_token'], '<|endoftext|>', 'the pad the training used (pad: auto picks unk, not the EOS)');

  const j = run(['export', '--model', trained, '--format', 'hf', '--out', out, '--overwrite', '--json', '--eot', '<|im_end|>']);
  assert.equal(j.code, 0, j.stderr);
  const s = JSON.parse(j.stdout) as Record<string, unknown>;
  assert.equal(s['eot_source'], 'flag');
  assert.equal(s['arch'], 'LlamaForCausalLM');
  assert.ok((s['files'] as string[]).includes('adapter/adapter_model.safetensors'));
  assert.equal(s['adapter'], path.join(trained, 'adapter'));
  assert.equal(s['pad_token_id'], info.ids.endoftext);

  // --dtype f16: every tensor stored as F16 (round to nearest even), torch_dtype says so, half the bytes.
  const half = path.join(tmp, 'hf-f16');
  const h = run(['export', '--model', trained, '--format', 'hf', '--out', half, '--dtype', 'f16', '--json']);
  assert.equal(h.code, 0, h.stderr);
  const src = readSafetensors(path.join(trained, 'model.safetensors'));
  const got = readSafetensors(path.join(half, 'model.safetensors'));
  for (const [name, t] of src.tensors) {
    const g = got.tensors.get(name)!;
    assert.equal(g.dtype, 'F16', name);
    assert.deepEqual(g.shape, t.shape, name);
    assert.deepEqual(g.data, roundToF16(t.data), name);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(half, 'config.json'), 'utf8'))['torch_dtype'], 'float16');
  assert.ok(
    Math.abs(fs.statSync(path.join(half, 'model.safetensors')).size / fs.statSync(path.join(out, 'model.safetensors')).size - 0.5) < 0.01,
  );
});

test('bad usage and bad input exit 2 with a clear message and write nothing', () => {
  const noWeights = path.join(tmp, 'no-weights');
  fs.mkdirSync(noWeights);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(model, f), path.join(noWeights, f));
  const noTemplate = path.join(tmp, 'no-template');
  fs.mkdirSync(noTemplate);
  for (const f of ['tokenizer.json', 'config.json', 'model.safetensors']) fs.copyFileSync(path.join(model, f), path.join(noTemplate, f));
  const tc = JSON.parse(fs.readFileSync(path.join(model, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete tc['chat_template'];
  fs.writeFileSync(path.join(noTemplate, 'tokenizer_config.json'), JSON.stringify(tc));
  const out = path.join(tmp, 'never.gguf');
  const cases: [string[], RegExp][] = [
    [['--model', noWeights, '--format', 'gguf', '--out', out], /error\[MODEL_INVALID\] .*no-weights: no weights \(\*\.safetensors\)/],
    [['--model', model, '--format', 'onnx', '--out', out], /error\[USAGE\] --format must be hf or gguf/],
    [['--model', model, '--format', 'gguf', '--out', out, '--dtype', 'q4'], /error\[USAGE\] --dtype must be f32 or f16/],
    [['--model', noTemplate, '--format', 'gguf', '--out', out], /error\[TEMPLATE_MISSING\] .*pass --eot TOKEN/],
    [['--model', model, '--format', 'gguf', '--out', out, '--eot', '<|not-a-token|>'], /error\[EXPORT_ERROR\].*not-a-token/],
    [['--model', path.join(tmp, 'nope'), '--format', 'gguf', '--out', out], /error\[FILE_MISSING\]/],
    [['--format', 'gguf', '--out', out], /required option '--model <dir>'/],
  ];
  for (const [args, msg] of cases) {
    const r = run(['export', ...args]);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, msg, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  assert.equal(fs.existsSync(out), false);
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp')),
    [],
  );
});
