import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Tokenizer, byteLevelAlphabet } from 'tokenizers';
import { Template } from '@huggingface/jinja';
import { generateDemoData, renderChatml } from '../src/demo/data.js';
import { byteSymbols, trainByteLevelBpe, writeDemoModelFolder } from '../src/demo/tokenizer.js';

const a = generateDemoData({ seed: 1, train: 400, heldout: 40, task: 'A' });
const b = generateDemoData({ seed: 1, train: 200, heldout: 20, task: 'B' });
const conversations = [...a.train, ...a.heldout, ...b.train, ...b.heldout];
const corpus = [...a.train, ...b.train].map(renderChatml);

async function withFolder<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'chatsft-demo-tok-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('byte symbols are GPT-2 bytes_to_unicode', () => {
  const symbols = byteSymbols();
  assert.equal(new Set(symbols).size, 256);
  assert.deepEqual([...symbols].sort(), [...byteLevelAlphabet()].sort());
  assert.equal(symbols[0x20], 'Ġ');
  assert.equal(symbols[0x0a], 'Ċ');
  assert.equal(symbols[0x41], 'A');
});

test('BPE training is deterministic, fills the vocabulary, and never merges across specials', () => {
  const one = trainByteLevelBpe(corpus, { vocabSize: 400, specialTokens: ['<|im_start|>', '<|im_end|>'] });
  const two = trainByteLevelBpe(corpus, { vocabSize: 400, specialTokens: ['<|im_start|>', '<|im_end|>'] });
  assert.deepEqual([...one.vocab], [...two.vocab]);
  assert.deepEqual(one.merges, two.merges);
  assert.equal(one.vocab.size, 400);
  for (const token of one.vocab.keys()) assert.ok(!token.includes('<|'), token);
  // The most frequent pieces of the demo became single tokens.
  assert.ok(one.vocab.has('Ġto'), 'Ġto');
  assert.ok(one.vocab.has('assistant'), 'assistant');
  // A corpus with nothing repeated learns no merge at all.
  assert.equal(trainByteLevelBpe(['xyz'], { vocabSize: 300 }).merges.length, 0);
});

test('the folder loads in the tokenizers binding, round-trips every demo text, and keeps ChatML tokens whole', async () => {
  await withFolder(async (dir) => {
    const info = await writeDemoModelFolder(dir, corpus);
    assert.equal(info.vocabSize, 512);
    const tok = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    assert.equal(tok.getVocabSize(true), info.vocabSize);
    assert.equal(tok.tokenToId('<|im_end|>'), info.ids.imEnd);
    assert.equal(tok.tokenToId('<|im_start|>'), info.ids.imStart);
    assert.equal(tok.tokenToId('<|endoftext|>'), info.ids.endoftext);

    const extra = ['héllo wörld ✓ 日本', '  two  spaces\n\n\ttab', "it's 3.14!", '', ' leading', 'x<|im_end|>y'];
    const texts = [...conversations.map(renderChatml), ...extra];
    let bytes = 0;
    let tokens = 0;
    for (const text of texts) {
      const ids = (await tok.encode(text)).getIds();
      assert.equal(await tok.decode(ids, false), text);
      bytes += Buffer.byteLength(text);
      tokens += ids.length;
    }
    // Merges learned on the demo data compress it well (bytes alone would be 1.0).
    assert.ok(tokens / bytes < 0.45, `tokens per byte ${(tokens / bytes).toFixed(3)}`);

    const imEnd = (await tok.encode('<|im_end|>')).getIds();
    assert.deepEqual(imEnd, [info.ids.imEnd]);
    const turn = (await tok.encode('<|im_start|>assistant\nc a t<|im_end|>\n')).getIds();
    assert.equal(turn[0], info.ids.imStart);
    assert.equal(turn.filter((id) => id === info.ids.imEnd).length, 1);
    assert.equal(turn[turn.length - 2], info.ids.imEnd);
  });
});

test('tokenizer_config, special_tokens_map and generation_config describe the legacy (no pad) setup', async () => {
  await withFolder(async (dir) => {
    const info = await writeDemoModelFolder(dir, corpus, { vocabSize: 384 });
    const read = async (name: string): Promise<Record<string, unknown>> =>
      JSON.parse(await readFile(path.join(dir, name), 'utf8')) as Record<string, unknown>;
    const config = await read('tokenizer_config.json');
    assert.equal(config['eos_token'], '<|im_end|>');
    assert.equal(config['pad_token'], null);
    assert.equal(config['padding_side'], 'left');
    assert.equal(config['add_bos_token'], false);
    const decoder = config['added_tokens_decoder'] as Record<string, { content: string; special: boolean }>;
    assert.deepEqual(decoder[String(info.ids.imEnd)], {
      content: '<|im_end|>',
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    });
    const generation = await read('generation_config.json');
    assert.equal(generation['eos_token_id'], info.ids.imEnd);
    const map = await read('special_tokens_map.json');
    assert.equal((map['eos_token'] as { content: string }).content, '<|im_end|>');
    assert.equal(map['pad_token'], undefined);
    // The chat template renders conversations exactly as the demo's ChatML text.
    const template = new Template(config['chat_template'] as string);
    for (const c of conversations.slice(0, 20)) {
      assert.equal(template.render({ messages: c.messages, add_generation_prompt: false }), renderChatml(c));
    }
    const prompt = template.render({ messages: [{ role: 'user', content: 'Spell cat.' }], add_generation_prompt: true });
    assert.equal(prompt, '<|im_start|>user\nSpell cat.<|im_end|>\n<|im_start|>assistant\n');
    assert.equal(info.vocabSize, 384);
  });
});

test('the same corpus writes byte-identical files', async () => {
  const contents = async (): Promise<string[]> =>
    withFolder(async (dir) => {
      const info = await writeDemoModelFolder(dir, corpus);
      return Promise.all(info.files.map((f) => readFile(f, 'utf8')));
    });
  assert.deepEqual(await contents(), await contents());
});
