/**
 * Templates and spans on edge cases: {% generation %} blocks, templates
 * without an EOT, ChatML text on a vocabulary without its tokens, Llama 2's
 * " </s>", over-length policies, special tokens in content.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 as makeRng } from './helpers/random.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildFixture, cleanupTemp, tempRoot, CHATML } from './helpers/fixtures.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { createEncoder, type EncodeOptions, type EncodedExample } from '../src/labels/encode.js';
import { probeTemplate } from '../src/template/probe.js';
import type { Conversation } from '../src/data/conversations.js';

after(cleanupTemp);

const CONV: Conversation = {
  messages: [
    { role: 'user', content: 'Name a colour.' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: 'Another?' },
    { role: 'assistant', content: 'Green, of course.' },
  ],
};

async function encodeOne(dir: string, conv: Conversation, setupOpts = {}, opts: EncodeOptions = {}) {
  const setup = setupTokenizer(loadModelFolder(dir), setupOpts);
  const [r] = await createEncoder(setup, opts).encode([{ conversation: conv, line: 7 }]);
  assert.ok(r);
  return { setup, r };
}

function supervised(r: EncodedExample): number[] {
  return r.example.inputIds.filter((_, i) => r.example.labels[i] !== -100);
}

test('{% generation %} blocks give the spans (transformers return_assistant_tokens_mask semantics)', async () => {
  const withTags =
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}" +
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}" +
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
  const tagged = await encodeOne(buildFixture('qwen3', { config: { chat_template: withTags } }), CONV);
  const plain = await encodeOne(buildFixture('qwen3', { config: { chat_template: CHATML } }), CONV);
  assert.ok(tagged.r.ok && plain.r.ok);
  assert.equal(tagged.setup.template.hasGenerationTags, true);
  assert.equal(tagged.r.example.text, plain.r.example.text, 'the tags print nothing');
  assert.deepEqual(tagged.r.example.labels, plain.r.example.labels);
  assert.equal(await tagged.setup.tokenizer.decode(supervised(tagged.r), false), 'Blue.<|im_end|>Green, of course.<|im_end|>');
});

test('a template that does not close assistant turns with a token: the line is dropped (eot_not_found) and the probe says TEMPLATE_NO_EOT', async () => {
  const dir = buildFixture('qwen3', { config: { chat_template: '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}' } });
  const { setup, r } = await encodeOne(dir, CONV);
  assert.ok(!r.ok && r.reason === 'eot_not_found', JSON.stringify(r));
  const probe = await probeTemplate(setup);
  assert.equal(probe.problem?.code, 'TEMPLATE_NO_EOT');
  assert.deepEqual(probe.stopIds, []);
});

test('ChatML text on a vocabulary without <|im_end|> fails with EOT_NOT_SINGLE_TOKEN', async () => {
  const file = join(tempRoot(), 'chatml.jinja');
  writeFileSync(file, CHATML);
  const dir = buildFixture('mistral');
  const { setup, r } = await encodeOne(dir, CONV, { template: file });
  assert.ok(!r.ok && r.reason === 'eot_not_found');
  const probe = await probeTemplate(setup);
  assert.equal(probe.problem?.code, 'EOT_NOT_SINGLE_TOKEN');
  assert.equal(probe.problem?.closing, '<|im_end|>');
});

test('the built-in ChatML template adds <|im_end|> = 32000 and <|im_start|> = 32001 to Mistral, as OpenHermes did', async () => {
  const { setup, r } = await encodeOne(buildFixture('mistral'), CONV, { template: 'chatml' });
  assert.ok(r.ok);
  assert.deepEqual(setup.addedTokens, [
    { content: '<|im_end|>', id: 32000 },
    { content: '<|im_start|>', id: 32001 },
  ]);
  assert.deepEqual(
    r.example.turns.map((t) => t.eotId),
    [32000, 32000],
  );
  assert.equal(r.example.inputIds[0], 1, 'BOS added once: the tokenizer adds it, the template does not');
  assert.equal(r.example.inputIds.filter((x) => x === 1).length, 1);
  assert.equal(setup.padToken, '<unk>', 'pad: auto picks unk, not the EOS');
});

test("Llama 2's template closes turns with ' </s>': the whitespace and </s> are supervised", async () => {
  const llama2 =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}" +
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
  const { setup, r } = await encodeOne(buildFixture('mistral', { config: { chat_template: llama2 } }), CONV);
  assert.ok(r.ok);
  assert.deepEqual(
    r.example.turns.map((t) => setup.tokenizer.idToToken(t.eotId)),
    ['</s>', '</s>'],
  );
  assert.equal(r.example.inputIds.filter((x) => x === 1).length, 1, 'BOS not doubled: the template renders it');
  for (const t of r.example.turns) assert.equal(r.example.labels[t.eot], 2);
});

test('a template that drops earlier assistant turns cannot be spanned: the line is dropped with span_not_found', async () => {
  const lastOnly =
    "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
  const { r } = await encodeOne(buildFixture('qwen3', { config: { chat_template: lastOnly } }), CONV);
  assert.ok(!r.ok && r.reason === 'span_not_found' && /cannot locate assistant message 1/.test(r.detail), JSON.stringify(r));
});

test('over-length: drop counts the example, truncate_turns keeps whole turns with their EOT', async () => {
  const dir = buildFixture('qwen3', { config: { chat_template: CHATML } });
  const full = await encodeOne(dir, CONV);
  assert.ok(full.r.ok);
  const n = full.r.example.inputIds.length;
  const cut = full.r.example.turns[0]!.eot + 3; // room for the first turn only
  const dropped = await encodeOne(dir, CONV, {}, { maxLength: cut });
  assert.equal(dropped.r.ok, false);
  assert.ok(!dropped.r.ok && dropped.r.reason === 'too_long');
  const exact = await encodeOne(dir, CONV, {}, { maxLength: n });
  assert.ok(exact.r.ok, 'exactly max_length is kept');
  const truncated = await encodeOne(dir, CONV, {}, { maxLength: cut, truncation: 'truncate_turns' });
  assert.ok(truncated.r.ok && truncated.r.truncated);
  assert.ok(truncated.r.example.inputIds.length <= cut);
  assert.equal(truncated.r.example.turns.length, 1);
  assert.equal(await truncated.setup.tokenizer.decode(supervised(truncated.r), false), 'Blue.<|im_end|>');
});

test('content holding special-token text is rejected by default and kept when allowed', async () => {
  const dir = buildFixture('qwen3');
  const conv: Conversation = {
    messages: [
      { role: 'user', content: 'Type <|im_end|> please' },
      { role: 'assistant', content: 'No.' },
    ],
  };
  const rejected = await encodeOne(dir, conv);
  assert.ok(!rejected.r.ok && rejected.r.reason === 'special_tokens_in_content' && /<\|im_end\|>/.test(rejected.r.detail));
  const allowed = await encodeOne(dir, conv, {}, { allowSpecialTokensInContent: true });
  assert.ok(allowed.r.ok);
});

test('raise_exception in a template drops that conversation with the template message', async () => {
  const dir = buildFixture('gemma3');
  const conv: Conversation = { messages: [{ role: 'assistant', content: 'I speak first.' }] };
  const { r } = await encodeOne(dir, conv);
  assert.ok(!r.ok && r.reason === 'template_error' && /alternate/.test(r.detail));
});

test('train_on all supervises everything except turns switched off', async () => {
  const conv: Conversation = { messages: [...CONV.messages.slice(0, 3), { role: 'assistant', content: 'Green.', train: false }] };
  const { r } = await encodeOne(buildFixture('qwen3', { config: { chat_template: CHATML } }), conv, {}, { trainOn: 'all' });
  assert.ok(r.ok);
  const off = r.example.turns[1]!;
  r.example.labels.forEach((l, i) => {
    const inOff = i >= off.start && i <= off.eot;
    assert.equal(l === -100, inOff, `position ${i}`);
  });
});

test('the only fast path (native ChatML) gives the same text and spans as the generic prefix-render method', async () => {
  const { compileTemplate, CHATML_TEMPLATE } = await import('../src/template/render.js');
  const { renderWithSpans } = await import('../src/template/spans.js');
  const native = compileTemplate(CHATML_TEMPLATE, 'chatml');
  // The same source with a no-op change is not byte-identical, so it takes the generic path.
  const generic = compileTemplate(CHATML_TEMPLATE + '{# generic #}', 'model');
  assert.equal(native.nativeChatml, true);
  assert.equal(generic.nativeChatml, false);
  const rng = makeRng(7);
  const words = ['a', ' lead', 'trail ', '\n', 'x y', 'é', '😀', '  '];
  const pick = (): string => Array.from({ length: 1 + Math.floor(rng() * 4) }, () => words[Math.floor(rng() * words.length)]).join('');
  for (let k = 0; k < 40; k++) {
    const messages: Conversation['messages'] = [];
    const turns = 1 + Math.floor(rng() * 3);
    for (let t = 0; t < turns; t++) {
      messages.push({ role: 'user', content: pick() });
      messages.push({ role: 'assistant', content: rng() < 0.1 ? '' : pick() });
      if (rng() < 0.2) messages.push({ role: 'assistant', content: pick() });
    }
    const conv = { messages };
    const a = renderWithSpans(native, conv, {});
    const b = renderWithSpans(generic, conv, {});
    assert.equal(a.text, b.text);
    assert.deepEqual(
      a.spans.map((s) => [s.start, s.end]),
      b.spans.map((s) => [s.start, s.end]),
      JSON.stringify(conv),
    );
  }
});

test('the native ChatML renderer gives exactly the Jinja render of the same template', async () => {
  const { Template } = await import('@huggingface/jinja');
  const { compileTemplate, renderChat, CHATML_TEMPLATE } = await import('../src/template/render.js');
  const jinja = new Template(CHATML_TEMPLATE);
  const native = compileTemplate(CHATML_TEMPLATE, 'model');
  const pieces = ['', ' ', 'a', '\n', 'héllo 👋', '<b>', '{{ x }}', '{% if %}', 'tab\tend\n\n'];
  let seed = 3;
  const pick = (): string => pieces[(seed = (seed * 1103515245 + 12345) >>> 0) % pieces.length] as string;
  for (let i = 0; i < 200; i++) {
    const roles = ['system', 'user', 'assistant', 'tool'] as const;
    const messages = Array.from({ length: 1 + (i % 5) }, (_, k) => ({
      role: roles[(i + k) % 4] as (typeof roles)[number],
      content: pick() + pick(),
    }));
    for (const add of [false, true]) {
      const expected = jinja.render({ messages, add_generation_prompt: add });
      assert.equal(renderChat(native, { messages }, { addGenerationPrompt: add }), expected);
    }
  }
});
