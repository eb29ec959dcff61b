/**
 * Shared by the input_* reliability tests: the real CLI, a tiny model folder
 * (demo tokenizer, random weights, 128 positions) and a JSONL file with one
 * of each kind of bad line, written as bytes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData, renderChatml, toJsonl } from '../../src/demo/data.js';
import { writeDemoModelFolder } from '../../src/demo/tokenizer.js';
import { createModel, disposeModel, initEngine, makeLlamaConfig, saveModel } from '../../src/engine/index.js';
import { REPO_ROOT } from '../helpers/fixtures.js';

export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    input: opts.input ?? '',
    env: { ...process.env, NO_COLOR: '1', ...(opts.env ?? {}) },
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** What every failing or warning run must look like: no stack trace, no INTERNAL. */
export function assertClean(r: Run): void {
  const all = r.stdout + r.stderr;
  assert.doesNotMatch(all, /error\[INTERNAL\]/, all);
  assert.doesNotMatch(all, /\n\s+at .+:\d+:\d+\)?\n/, `stack trace in:\n${all}`);
}

/** Exit 2 with exactly one `error[CODE]` line matching `re`. */
export function assertUsageError(r: Run, re: RegExp, code = 2): void {
  assertClean(r);
  assert.equal(r.code, code, r.stderr);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('error['));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(r.stderr, re);
}

export interface Sandbox {
  root: string;
  model: string;
  train: string;
  heldout: string;
  /** One line of each kind; see MIXED_LINES. */
  mixed: string;
}

/**
 * Line numbers of mixed.jsonl and what happens to each:
 * 1 BOM + valid, 2 Latin-1 byte (invalid_utf8), 3 not JSON (invalid_data),
 * 4 unknown role (invalid_data), 5 `<|im_end|>` typed in user content
 * (special_tokens_in_content), 6 a 3 MB user message (too_long, never
 * tokenized), 7 blank, 8-11 valid, 12 user turn only.
 */
export const MIXED = { lines: 12, valid: [1, 8, 9, 10, 11] };

export async function makeSandbox(prefix: string, opts: { weights?: boolean } = {}): Promise<Sandbox> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const { train, heldout } = generateDemoData({ seed: 5, train: 20, heldout: 6, task: 'A' });
  const model = join(root, 'model');
  const info = await writeDemoModelFolder(model, [...train, ...heldout].map(renderChatml), { vocabSize: 400 });
  const config = makeLlamaConfig({
    vocabSize: info.vocabSize,
    hiddenSize: 32,
    intermediateSize: 64,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 128,
  });
  if (opts.weights) {
    await initEngine();
    const m = createModel(config, 0);
    saveModel(m, model);
    disposeModel(m);
  } else {
    writeFileSync(
      join(model, 'config.json'),
      JSON.stringify({
        model_type: 'llama',
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        vocab_size: info.vocabSize,
        rms_norm_eps: 1e-5,
        rope_theta: 10000,
        tie_word_embeddings: true,
        max_position_embeddings: 128,
      }),
    );
  }
  const trainFile = join(root, 'train.jsonl');
  const heldoutFile = join(root, 'heldout.jsonl');
  writeFileSync(trainFile, toJsonl(train));
  writeFileSync(heldoutFile, toJsonl(heldout));
  const good = toJsonl(train)
    .split('\n')
    .filter(Boolean)
    .map((l) => Buffer.from(l));
  const j = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));
  const lines: Buffer[] = [
    Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), good[0]!]),
    Buffer.concat([
      Buffer.from('{"messages": [{"role": "user", "content": "caf'),
      Buffer.from([0xe9]),
      Buffer.from('"}, {"role": "assistant", "content": "x"}]}'),
    ]),
    Buffer.from('not json'),
    j({ messages: [{ role: 'bot', content: 'x' }] }),
    j({
      messages: [
        { role: 'user', content: 'hi <|im_end|> there' },
        { role: 'assistant', content: 'ok' },
      ],
    }),
    j({
      messages: [
        { role: 'user', content: 'a'.repeat(3_000_000) },
        { role: 'assistant', content: 'ok' },
      ],
    }),
    Buffer.from(''),
    ...good.slice(1, 5),
    j({ messages: [{ role: 'user', content: 'only a user turn' }] }),
  ];
  const mixed = join(root, 'mixed.jsonl');
  writeFileSync(mixed, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
  return { root, model, train: trainFile, heldout: heldoutFile, mixed };
}
