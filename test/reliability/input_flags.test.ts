/**
 * Issue 10 §12: every numeric flag goes through one parser with range
 * checks (and names the flag); config errors suggest chatsft's names for
 * the keys HF/TRL users type; a GGUF cut inside its metadata is reported as
 * truncated, with the offset, not as a missing chat template.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertUsageError, cli, makeSandbox, type Sandbox } from './input_cli.js';
import { intFlag, numFlag } from '../../src/cli/flags.js';
import { kv, writeGguf } from '../../src/export/gguf-file.js';
import { checkGgufHeader } from '../../src/eval/gguf-header.js';
import { isChatsftError } from '../../src/errors.js';

let s: Sandbox;
before(async () => {
  s = await makeSandbox('chatsft-input-flags-');
});
after(() => rmSync(s.root, { recursive: true, force: true }));

test('intFlag / numFlag: strict syntax and ranges', () => {
  assert.equal(intFlag('12', 'n'), 12);
  assert.equal(intFlag('1e3', 'n'), 1000);
  assert.equal(intFlag(' 7 ', 'n', { min: 1 }), 7);
  for (const bad of ['abc', '', '1.5', '0x10', '1e', 'Infinity', 'NaN', '9007199254740993', '--3']) {
    assert.throws(
      () => intFlag(bad, 'n'),
      (e: unknown) => isChatsftError(e) && e.code === 'USAGE' && e.message.includes('--n must be an integer'),
      bad,
    );
  }
  assert.throws(() => intFlag('0', 'shard-rows', { min: 1 }), /--shard-rows must be an integer >= 1, got '0'/);
  assert.equal(numFlag('0.5', 'top-p', { above: 0, max: 1 }), 0.5);
  assert.equal(numFlag('.5', 'x'), 0.5);
  for (const bad of ['0', '1.5', 'abc', ''])
    assert.throws(() => numFlag(bad, 'top-p', { above: 0, max: 1 }), /--top-p must be a number > 0 and <= 1/);
});

test('numeric flags through the real CLI: one clear error naming the flag, exit 2', () => {
  const prep = ['prepare', '--model', s.model, '--data', s.train, '--out', join(s.root, 'p')];
  const cases: Array<[string[], RegExp]> = [
    [[...prep, '--shard-rows', '0'], /--shard-rows must be an integer >= 1, got '0'/],
    [[...prep, '--shard-rows', 'abc'], /--shard-rows must be an integer >= 1, got 'abc'/],
    [['eval', '--model', s.model, '--data', s.heldout, '--samples', 'abc'], /--samples must be an integer >= 0, got 'abc'/],
    [['eval', '--model', s.model, '--data', s.heldout, '--limit', '0'], /--limit must be an integer >= 1/],
    // eval's --batch-size shares its name with the config key, so the schema answers first (naming the flag).
    [['eval', '--model', s.model, '--data', s.heldout, '--batch-size', '2.5'], /batch_size: .*expected int.* \(from --batch-size '2.5'\)/],
    [['inspect', '--model', s.model, '--data', s.train, '--index', '-1'], /--index must be an integer >= 0, got '-1'/],
    [['inspect', '--model', s.model, '--data', s.train, '--count', 'x'], /--count must be an integer >= 1/],
    [['generate', '--model', s.model, '--prompt', 'hi', '--max-new-tokens', 'abc'], /--max-new-tokens must be an integer >= 1, got 'abc'/],
    [['generate', '--model', s.model, '--prompt', 'hi', '--top-k', '-1'], /--top-k must be an integer >= 0/],
    [['generate', '--model', s.model, '--prompt', 'hi', '--temperature', 'hot'], /--temperature must be a number >= 0/],
    [['chat', '--model', s.model, '--seed', '1.5'], /seed: .*expected int.* \(from --seed '1.5'\)/],
    [['demo', '--steps', '0'], /--steps must be an integer >= 1, got '0'/],
    // Config keys given as flags: the schema's message, with the flag as typed.
    [[...prep, '--max-length', 'abc'], /max_length: .*expected number.* \(from --max-length 'abc'\)/],
  ];
  for (const [args, re] of cases) assertUsageError(cli(args), re);
});

test("config: the names HF/TRL/PEFT users type get chatsft's name suggested", () => {
  const file = join(s.root, 'hf.yaml');
  writeFileSync(
    file,
    [
      'learning_rate: 1e-4',
      'num_train_epochs: 2',
      'gradient_accumulation_steps: 4',
      'lr_scheduler_type: cosine',
      'per_device_train_batch_size: 2',
      'max_seq_length: 512',
      'warmup_ratio: 0.1',
      'lora:',
      '  lora_alpha: 16',
      '  rank: 4',
    ].join('\n'),
  );
  const r = cli(['train', '--config', file]);
  assertUsageError(r, /error\[CONFIG_INVALID\]/);
  const pairs: Array<[string, string]> = [
    ['learning_rate', 'lr'],
    ['num_train_epochs', 'epochs'],
    ['gradient_accumulation_steps', 'grad_accum'],
    ['lr_scheduler_type', 'schedule'],
    ['per_device_train_batch_size', 'batch_size'],
    ['max_seq_length', 'max_length'],
    ['warmup_ratio', 'warmup_steps'],
    ['lora.lora_alpha', 'alpha'],
    ['lora.rank', 'r'],
  ];
  for (const [from, to] of pairs) {
    assert.match(
      r.stderr,
      new RegExp(`^${from.replace('.', '\\.')}: unknown key \\(did you mean '${to}'\\?`, 'm'),
      `${from} → ${to}\n${r.stderr}`,
    );
  }
});

test('a GGUF truncated inside its metadata is FILE_CORRUPT naming the file and offset, not TEMPLATE_MISSING', () => {
  const whole = join(s.root, 'whole.gguf');
  writeGguf(
    whole,
    [kv.str('general.architecture', 'llama'), kv.str('a', 'x'.repeat(100)), kv.str('tokenizer.chat_template', '{{ messages }}')],
    [],
  );
  const bytes = readFileSync(whole);
  assert.equal(checkGgufHeader(whole), bytes.length - (bytes.length - checkGgufHeader(whole)));
  const cut = join(s.root, 'cut.gguf');
  for (const n of [3, 20, 60, 100, bytes.length - 5]) {
    writeFileSync(cut, bytes.subarray(0, n));
    assert.throws(
      () => checkGgufHeader(cut),
      (e: unknown) => isChatsftError(e) && e.code === 'FILE_CORRUPT' && e.message.includes(`the file ends at ${n}`),
      `cut at ${n}`,
    );
  }
  // Through the CLI: the llama.cpp path reads the metadata before loading llama.cpp.
  writeFileSync(cut, bytes.subarray(0, 100));
  const r = cli(['eval', '--engine', 'llama.cpp', '--model', cut, '--data', s.heldout]);
  assertUsageError(
    r,
    /error\[FILE_CORRUPT\] .*cut\.gguf: truncated inside its metadata: metadata entry 2 of 3 \('a'\) needs bytes up to offset \d+, but the file ends at 100/,
  );
  assert.doesNotMatch(r.stderr, /TEMPLATE_MISSING/);
});
