/**
 * `chatsft generate`, `chat` and `eval` through the real CLI, on a tiny model
 * trained here on the demo data (about 20 s). The stop-id tests vary one
 * source at a time (template EOT, generation_config eos, tokenizer eos) on
 * copies of the trained folder, and one copy with none of them naming the
 * token the model learned to stop with.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData, renderChatml, toJsonl, type DemoConversation } from '../src/demo/data.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { disposeModel, initEngine, loadModel, makeLlamaConfig, toHfConfig } from '../src/engine/index.js';
import { ConfigSchema } from '../src/config/schema.js';
import { trainFromConfig } from '../src/train/from-config.js';
import { evaluateModel, setupForInference } from '../src/eval/index.js';
import { loadModelFolder } from '../src/model/folder.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'chatsft-cli-gen-'));
after(() => rmSync(root, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

async function json<T>(args: string[]): Promise<T> {
  const r = await cli([...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

interface GenResult {
  line?: number;
  text: string;
  tokens: number[];
  new_tokens: number;
  stopped_by: number | null;
  stop_token: string | null;
  hit_max_new_tokens: boolean;
}

const data = generateDemoData({ seed: 0, train: 400, heldout: 24, task: 'A' });
let trained = '';
let ids = { imStart: 0, imEnd: 0, endoftext: 0 };
/** Single-turn training conversations the trained model answers and then stops on (greedy). */
let stopping: DemoConversation[] = [];
let stopsFile = '';
const heldoutFile = join(root, 'heldout.jsonl');

before(async () => {
  const base = join(root, 'base');
  const info = await writeDemoModelFolder(base, data.train.map(renderChatml));
  ids = info.ids;
  const config = makeLlamaConfig({
    vocabSize: info.vocabSize,
    hiddenSize: 64,
    intermediateSize: 256,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 256,
  });
  writeFileSync(join(base, 'config.json'), JSON.stringify(toHfConfig(config)));
  writeFileSync(join(root, 'train.jsonl'), toJsonl(data.train));
  writeFileSync(heldoutFile, toJsonl(data.heldout));
  trained = join(root, 'trained');
  const cfg = ConfigSchema.parse({
    model: base,
    data: { train: join(root, 'train.jsonl') },
    output_dir: trained,
    max_steps: 120,
    batch_size: 16,
    lr: 5e-3,
    warmup_steps: 10,
    seed: 0,
  });
  await trainFromConfig(cfg, { quiet: true, onLog: () => {} });

  // Candidates: single-turn training conversations (their prompt renders the
  // same under the alternative template below).
  const single = data.train.filter((c) => c.messages.filter((m) => m.role === 'user').length === 1).slice(0, 48);
  const candidates = join(root, 'candidates.jsonl');
  writeFileSync(candidates, toJsonl(single));
  await initEngine();
  const model = loadModel(trained);
  try {
    const { rows } = await evaluateModel({
      setup: setupForInference(loadModelFolder(trained), 'model'),
      data: candidates,
      model,
      maxNewTokens: 32,
      lossOnly: false,
    });
    stopping = rows
      .flatMap((r, i) => (r.stoppedBy === ids.imEnd && r.tokens.length > 0 ? [single[i] as DemoConversation] : []))
      .slice(0, 4);
  } finally {
    disposeModel(model);
  }
  stopsFile = join(root, 'stops.jsonl');
  writeFileSync(stopsFile, toJsonl(stopping));
});

/** ChatML for the prompt, but assistant turns close with <|endoftext|>: the template EOT is no longer <|im_end|>. */
const ALT_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']}}" +
  "{% if message['role'] == 'assistant' %}{{'<|endoftext|>'}}{% else %}{{'<|im_end|>'}}{% endif %}{{'\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A copy of the trained folder whose stop-id sources are set as given. */
function variant(name: string, v: { template: 'chatml' | 'alt'; eosToken: string; genEos: number[] }): string {
  const dir = join(root, name);
  cpSync(trained, dir, { recursive: true });
  const tcPath = join(dir, 'tokenizer_config.json');
  const tc = JSON.parse(readFileSync(tcPath, 'utf8')) as Record<string, unknown>;
  if (v.template === 'alt') tc['chat_template'] = ALT_TEMPLATE;
  tc['eos_token'] = v.eosToken;
  writeFileSync(tcPath, JSON.stringify(tc));
  const smPath = join(dir, 'special_tokens_map.json');
  writeFileSync(smPath, JSON.stringify({ ...JSON.parse(readFileSync(smPath, 'utf8')), eos_token: v.eosToken }));
  const gcPath = join(dir, 'generation_config.json');
  writeFileSync(gcPath, JSON.stringify({ ...JSON.parse(readFileSync(gcPath, 'utf8')), eos_token_id: v.genEos }));
  return dir;
}

test('the trained model has prompts it stops on', () => {
  assert.ok(stopping.length >= 2, `only ${stopping.length} of the candidate prompts stopped`);
});

test('each stop-id source alone stops generation; with none of them the model runs to max_new_tokens', async () => {
  const { imEnd, endoftext } = ids;
  const gen = (dir: string) =>
    json<{ stop_ids: number[]; results: GenResult[] }>([
      'generate',
      '--model',
      dir,
      '--data',
      stopsFile,
      '--max-new-tokens',
      '32',
      '--quiet',
    ]);
  const sources = {
    'template EOT': variant('v-template', { template: 'chatml', eosToken: '<|endoftext|>', genEos: [endoftext] }),
    'generation_config eos': variant('v-genconfig', { template: 'alt', eosToken: '<|endoftext|>', genEos: [imEnd] }),
    'tokenizer eos': variant('v-tokenizer', { template: 'alt', eosToken: '<|im_end|>', genEos: [endoftext] }),
  };
  const reference = await gen(trained);
  assert.deepEqual(reference.stop_ids, [imEnd]);
  for (const [source, dir] of Object.entries(sources)) {
    const out = await gen(dir);
    assert.deepEqual(
      out.stop_ids,
      [imEnd, endoftext].sort((a, b) => a - b),
      source,
    );
    out.results.forEach((r, i) => {
      assert.equal(r.stopped_by, imEnd, `${source}: line ${r.line}`);
      assert.equal(r.stop_token, '<|im_end|>');
      assert.deepEqual(r.tokens, reference.results[i]!.tokens, `${source}: same greedy tokens`);
      assert.ok(!r.text.includes('<|im_end|>'), 'the stop token is not printed');
    });
  }
  const none = await gen(variant('v-none', { template: 'alt', eosToken: '<|endoftext|>', genEos: [endoftext] }));
  assert.deepEqual(none.stop_ids, [endoftext]);
  none.results.forEach((r, i) => {
    const ref = reference.results[i]!;
    assert.equal(r.stopped_by, null);
    assert.equal(r.hit_max_new_tokens, true);
    assert.equal(r.new_tokens, 32);
    // It emitted <|im_end|> exactly where the others stopped, and went on.
    assert.deepEqual(r.tokens.slice(0, ref.tokens.length + 1), [...ref.tokens, imEnd]);
  });
});

test('--prompt streams the reply as --json reports it; --raw with the rendered prompt gives the same tokens', async () => {
  const conv = stopping[0]!;
  const user = conv.messages.find((m) => m.role === 'user')!.content;
  const system = conv.messages.find((m) => m.role === 'system')?.content;
  const sys = system !== undefined ? ['--system', system] : [];
  const j = await json<GenResult & { stop_ids: number[]; prompt_tokens: number }>([
    'generate',
    '--model',
    trained,
    '--prompt',
    user,
    ...sys,
    '--max-new-tokens',
    '32',
  ]);
  assert.equal(j.stopped_by, ids.imEnd);
  assert.equal(j.new_tokens, j.tokens.length);
  assert.ok(j.prompt_tokens > 0);
  const streamed = await cli(['generate', '--model', trained, '--prompt', user, ...sys, '--max-new-tokens', '32']);
  assert.equal(streamed.code, 0, streamed.stderr);
  assert.equal(streamed.stdout, j.text + '\n');
  assert.match(streamed.stderr, /stopped by <\|im_end\|>/);
  const rendered = renderChatml({ messages: conv.messages.slice(0, -1) }) + '<|im_start|>assistant\n';
  const raw = await json<GenResult>(['generate', '--model', trained, '--raw', '--prompt', rendered, '--max-new-tokens', '32']);
  assert.deepEqual(raw.tokens, j.tokens);
  // Sampling is reproducible from its seed.
  const s1 = await json<GenResult>([
    'generate',
    '--model',
    trained,
    '--prompt',
    user,
    '--temperature',
    '1',
    '--top-k',
    '20',
    '--seed',
    '7',
    '--max-new-tokens',
    '16',
  ]);
  const s2 = await json<GenResult>([
    'generate',
    '--model',
    trained,
    '--prompt',
    user,
    '--temperature',
    '1',
    '--top-k',
    '20',
    '--seed',
    '7',
    '--max-new-tokens',
    '16',
  ]);
  assert.deepEqual(s1.tokens, s2.tokens);
  const bad = await cli(['generate', '--model', trained]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error\[USAGE\]/);
});

test('chat over piped stdin keeps the history, /reset clears it, /exit ends the session', async () => {
  const q = stopping.map((c) => c.messages.find((m) => m.role === 'user')!.content);
  const [q1, q2] = [q[0]!, q[1]!];
  const fresh = async (prompt: string, raw = false): Promise<string> =>
    (await json<GenResult>(['generate', '--model', trained, ...(raw ? ['--raw'] : []), '--prompt', prompt, '--max-new-tokens', '32'])).text;
  const r1 = await fresh(q1);
  // Chat keeps special tokens out of the history it re-renders.
  const history =
    renderChatml({
      messages: [
        { role: 'user', content: q1 },
        { role: 'assistant', content: r1 },
        { role: 'user', content: q2 },
      ],
    }) + '<|im_start|>assistant\n';
  const r2WithHistory = await fresh(history, true);
  const r2Fresh = await fresh(q2);
  const chat = await cli(['chat', '--model', trained, '--max-new-tokens', '32'], `${q1}\n${q2}\n/reset\n${q2}\n/exit\n${q1}\n`);
  assert.equal(chat.code, 0, chat.stderr);
  assert.equal(chat.stdout, `${r1}\n${r2WithHistory}\n${r2Fresh}\n`);
  assert.match(chat.stderr, /history cleared/);
});

test('eval --json reports loss, stop rate and lengths; --loss-only skips generation', async () => {
  interface EvalJson {
    loss: number;
    stop_rate: number | null;
    mean_new_tokens: number | null;
    p95_new_tokens: number | null;
    max_new_tokens: number;
    examples: number | null;
    reference_mean_tokens: number | null;
    runaways: { total: number; new_turn_header: number; inside_text: number } | null;
    stop_ids: number[];
    samples: { text: string; ending: string }[];
  }
  const full = await json<EvalJson>(['eval', '--model', trained, '--data', heldoutFile, '--max-new-tokens', '32', '--quiet']);
  assert.equal(full.examples, data.heldout.length);
  assert.equal(full.max_new_tokens, 32);
  assert.ok(Number.isFinite(full.loss) && full.loss > 0);
  assert.ok(full.stop_rate !== null && full.stop_rate >= 0 && full.stop_rate <= 1);
  assert.ok(full.mean_new_tokens !== null && full.mean_new_tokens <= 32);
  assert.ok(full.p95_new_tokens !== null && full.p95_new_tokens >= full.mean_new_tokens! - 1e-9);
  assert.ok(full.reference_mean_tokens !== null && full.reference_mean_tokens > 0);
  assert.equal(full.runaways!.total, full.examples! - Math.round(full.stop_rate * full.examples!));
  assert.deepEqual(full.stop_ids, [ids.imEnd]);
  assert.equal(full.samples.length, 3);
  const lossOnly = await json<EvalJson>(['eval', '--model', trained, '--data', heldoutFile, '--loss-only']);
  assert.equal(lossOnly.stop_rate, null);
  assert.equal(lossOnly.examples, null);
  assert.ok(Math.abs(lossOnly.loss - full.loss) < 1e-6);
  const table = await cli(['eval', '--model', trained, '--data', heldoutFile, '--max-new-tokens', '32', '--limit', '4']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /stop rate +\d+\.\d%  \(\d+\/4 generations/);
  assert.match(table.stderr, /eval +4\/4/);
});
