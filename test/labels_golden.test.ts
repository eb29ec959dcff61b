/**
 * Golden tables: ids and labels of one 3-turn conversation (system, user,
 * assistant, user, assistant) for each fixture tokenizer.
 *
 * How the expected values were obtained: `text` was written by hand from
 * each model's documented chat format (ChatML for Qwen3 with its empty
 * <think> scaffold on the final turn and for OpenHermes-Mistral; Llama 3.1
 * headers with <|eot_id|>; Gemma 3 with the system prompt folded into the
 * first user turn and `model` as the assistant role). `ids` are what the
 * Hugging Face Rust tokenizer (the `tokenizers` binding, the library
 * transformers' fast tokenizers wrap) gives for that text without special
 * tokens, plus <s> for Mistral (add_bos_token, template without BOS);
 * recorded once and checked by decoding each supervised range by hand
 * (`Hello.` + EOT and `1 2 3` + EOT). `supervised` lists the positions whose
 * label equals the input id; all others are -100.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildFixture, type FixtureName } from './helpers/fixtures.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { createEncoder } from '../src/labels/encode.js';
import type { Conversation } from '../src/data/conversations.js';

const CONVERSATION: Conversation = {
  messages: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi!' },
    { role: 'assistant', content: 'Hello.' },
    { role: 'user', content: 'Count to 3.' },
    { role: 'assistant', content: '1 2 3' },
  ],
};

interface Golden {
  name: FixtureName;
  text: string;
  ids: number[];
  supervised: number[];
  eot: number[];
  eotToken: string;
  /** What the template renders for the last turn before its EOT, when not just the content. */
  lastTurn?: string;
}

const GOLDEN: Golden[] = [
  {
    name: 'qwen3',
    text: '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCount to 3.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n1 2 3<|im_end|>\n',
    ids: [
      151644, 8948, 198, 3430, 9814, 13, 151645, 198, 151644, 872, 198, 13048, 0, 151645, 198, 151644, 77091, 198, 9707, 13, 151645, 198,
      151644, 872, 198, 2507, 311, 220, 18, 13, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271, 16, 220, 17, 220, 18, 151645,
      198,
    ],
    // 35-38 are the empty <think> scaffold the template renders for the final turn:
    // part of that turn (the model generates it after `<|im_start|>assistant\n`), so
    // supervised, as TRL's qwen3 training template does with {% generation %}. The
    // earlier golden left it masked, which trained a model that never opens <think>.
    supervised: [18, 19, 20, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44],
    eot: [20, 44],
    eotToken: '<|im_end|>',
    lastTurn: '<think>\n\n</think>\n\n1 2 3',
  },
  {
    name: 'mistral-chatml',
    text: '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCount to 3.<|im_end|>\n<|im_start|>assistant\n1 2 3<|im_end|>\n',
    ids: [
      1, 32001, 1587, 13, 3574, 6817, 28723, 32000, 28705, 13, 32001, 2188, 13, 23809, 28808, 32000, 28705, 13, 32001, 13892, 13, 16230,
      28723, 32000, 28705, 13, 32001, 2188, 13, 3072, 298, 28705, 28770, 28723, 32000, 28705, 13, 32001, 13892, 13, 28740, 28705, 28750,
      28705, 28770, 32000, 28705, 13,
    ],
    supervised: [21, 22, 23, 40, 41, 42, 43, 44, 45],
    eot: [23, 45],
    eotToken: '<|im_end|>',
  },
  {
    name: 'llama3',
    text: '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nCount to 3.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n1 2 3<|eot_id|>',
    ids: [
      128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882, 128007, 271, 13347, 0, 128009, 128006, 78191, 128007, 271,
      9906, 13, 128009, 128006, 882, 128007, 271, 2568, 311, 220, 18, 13, 128009, 128006, 78191, 128007, 271, 16, 220, 17, 220, 18, 128009,
    ],
    supervised: [20, 21, 22, 37, 38, 39, 40, 41, 42],
    eot: [22, 42],
    eotToken: '<|eot_id|>',
  },
  {
    name: 'gemma3',
    text: '<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nCount to 3.<end_of_turn>\n<start_of_turn>model\n1 2 3<end_of_turn>\n',
    ids: [
      2, 105, 2364, 107, 3912, 8652, 236761, 108, 10979, 236888, 106, 107, 105, 4368, 107, 9259, 236761, 106, 107, 105, 2364, 107, 4377,
      531, 236743, 236800, 236761, 106, 107, 105, 4368, 107, 236770, 236743, 236778, 236743, 236800, 106, 107,
    ],
    supervised: [15, 16, 17, 32, 33, 34, 35, 36, 37],
    eot: [17, 37],
    eotToken: '<end_of_turn>',
  },
];

for (const g of GOLDEN) {
  test(`golden ids and labels: ${g.name}`, async () => {
    const setup = setupTokenizer(loadModelFolder(buildFixture(g.name)));
    const [r] = await createEncoder(setup).encode([{ conversation: CONVERSATION, line: 1 }]);
    assert.ok(r?.ok, 'the conversation encodes');
    assert.equal(r.example.text, g.text);
    assert.deepEqual(r.example.inputIds, g.ids);
    const expectedLabels = g.ids.map((id, i) => (g.supervised.includes(i) ? id : -100));
    assert.deepEqual(r.example.labels, expectedLabels);
    assert.deepEqual(
      r.example.turns.map((t) => t.eot),
      g.eot,
    );
    const eotId = setup.tokenizer.tokenToId(g.eotToken);
    for (const t of r.example.turns) assert.equal(t.eotId, eotId, `turn ${t.messageIndex} closes with ${g.eotToken}`);
    // Each supervised range decodes to the content followed by the EOT.
    const ranges = [g.supervised.filter((i) => i <= (g.eot[0] as number)), g.supervised.filter((i) => i > (g.eot[0] as number))];
    const decoded = await Promise.all(
      ranges.map((r2) =>
        setup.tokenizer.decode(
          r2.map((i) => g.ids[i] as number),
          false,
        ),
      ),
    );
    assert.deepEqual(decoded, [`Hello.${g.eotToken}`, `${g.lastTurn ?? '1 2 3'}${g.eotToken}`]);
  });
}
