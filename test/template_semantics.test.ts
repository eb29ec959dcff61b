/**
 * Template behaviour of issue 9/13 that the corpus test does not isolate:
 * Python semantics of the render (and that importing chatsft leaves
 * @huggingface/jinja alone), chat_template.jinja and named templates, tool
 * calls with null content on the real Qwen3 template, the probe's stop ids
 * for harmony (gpt-oss) turns, and truncate_turns under train_on: last.
 * Expected values are written from Python Jinja2 / transformers behaviour.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from 'tokenizers';
import { buildFixture, cleanupTemp, tempRoot, packageModelsDir, REPO_ROOT } from './helpers/fixtures.js';
import { PyTemplate, pyStrip } from '../src/template/jinja-compat.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { createEncoder } from '../src/labels/encode.js';
import { renderChat } from '../src/template/render.js';
import { probeTemplate } from '../src/template/probe.js';
import type { Conversation } from '../src/data/conversations.js';

after(cleanupTemp);

test('renders with Python semantics: None, booleans, dicts, str + None raises, Python whitespace', () => {
  const r = (src: string, vars: Record<string, unknown>): string => new PyTemplate(src).render(vars);
  assert.equal(r('{{ x }}', { x: null }), 'None');
  assert.equal(r('{{ t }}|{{ f }}', { t: true, f: false }), 'True|False');
  assert.equal(r('{{ d }}', { d: { a: 1, b: "it's", c: [1, null, 'x'] } }), `{'a': 1, 'b': "it's", 'c': [1, None, 'x']}`);
  assert.equal(r('{{ "a" ~ d }}', { d: { a: 1 } }), "a{'a': 1}");
  assert.throws(() => r('{{ "a" + x }}', { x: null }), /concatenate str/);
  assert.throws(() => r('{{ "a" + d }}', { d: { a: 1 } }), /concatenate str/);
  assert.equal(r('{{ x | trim }}', { x: null }), 'None');
  assert.equal(r('{% if x.content %}y{% else %}n{% endif %}', { x: { content: null } }), 'n');
  assert.equal(r('{% for t in missing %}x{% else %}empty{% endfor %}', {}), 'empty');
  // Python keeps U+FEFF and strips \x1c-\x1f and U+0085; JavaScript's trim does the opposite.
  const s = '\ufeff a \u3000\x1c\x85';
  assert.equal(r('{{ s.strip() }}|{{ s | trim }}', { s }), '\ufeff a|\ufeff a');
  assert.equal(r("{{ s.lstrip('\\n') }}", { s: '\n\n x' }), ' x');
  assert.equal(pyStrip('xxaxx', 'x', 'right'), 'xxa');
});

test('importing chatsft does not patch @huggingface/jinja for other users', () => {
  // chatsft has rendered above; the library's own Template keeps its behaviour.
  assert.equal(new PyTemplate('{{ x }}').render({ x: null }), 'None');
  assert.equal(new Template('{{ x }}').render({ x: null }), '');
  assert.equal(new Template("{{ s.strip('a') }}").render({ s: 'aba' }), 'aba');
  assert.equal(new PyTemplate("{{ s.strip('a') }}").render({ s: 'aba' }), 'b');
});

test('chat_template.jinja wins over tokenizer_config; a named tool_use template serves conversations with tools', async () => {
  const dir = buildFixture('qwen3', {
    config: {
      chat_template: [
        {
          name: 'default',
          template: "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}",
        },
        {
          name: 'tool_use',
          template:
            "TOOLS{{ tools | length }}{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}",
        },
      ],
    },
  });
  const conv: Conversation = {
    messages: [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Yo' },
    ],
  };
  let setup = setupTokenizer(loadModelFolder(dir));
  assert.ok(!renderChat(setup.template, conv).startsWith('TOOLS'));
  assert.ok(renderChat(setup.template, { ...conv, tools: [{ type: 'function', function: { name: 'f' } }] }).startsWith('TOOLS1'));
  writeFileSync(
    join(dir, 'chat_template.jinja'),
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\nFILE ' + m.content + '<|im_end|>\\n' }}{% endfor %}",
  );
  setup = setupTokenizer(loadModelFolder(dir));
  assert.match(renderChat(setup.template, conv), /FILE Yo/);
});

test('Qwen3 tool calls: empty content stays empty, the call text and <|im_end|> are supervised; null content raises as in Python', async () => {
  const setup = setupTokenizer(loadModelFolder(buildFixture('qwen3')));
  const conv: Conversation = {
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: '',
        tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }],
      },
      { role: 'tool', content: '18 C', tool_call_id: 'c1' },
      { role: 'assistant', content: 'It is 18 C.' },
    ],
    tools: [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
    ],
  };
  const text = renderChat(setup.template, conv, { vars: setup.vars });
  // The template's `if content` branch saw '': no empty line before the call.
  assert.match(
    text,
    /<\|im_start\|>assistant\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}\n<\/tool_call><\|im_end\|>/,
  );
  const [r] = await createEncoder(setup).encode([{ conversation: conv, line: 1 }]);
  assert.ok(r?.ok, JSON.stringify(r));
  const turns = r.example.turns;
  assert.equal(turns.length, 2);
  assert.equal(turns[0]!.toolCalls, true);
  const decode = async (t: (typeof turns)[number]): Promise<string> =>
    setup.tokenizer.decode(r.example.labels.slice(t.start, t.eot + 1), false);
  assert.equal(await decode(turns[0]!), '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>');
  assert.equal(await decode(turns[1]!), '<think>\n\n</think>\n\nIt is 18 C.<|im_end|>');
  // This template tests `'</think>' in content`: Python raises TypeError on None, so the line is a template_error drop.
  const withNull: Conversation = { ...conv, messages: conv.messages.map((m, i) => (i === 1 ? { ...m, content: null } : m)) };
  const [d] = await createEncoder(setup).encode([{ conversation: withNull, line: 2 }]);
  assert.ok(d && !d.ok && d.reason === 'template_error', JSON.stringify(d));
});

/** A model folder with the gpt-oss template on Qwen3's vocabulary plus the harmony tokens. */
function harmonyFolder(): string {
  const dir = join(tempRoot(), 'harmony');
  mkdirSync(dir, { recursive: true });
  const tok = Tokenizer.fromFile(join(packageModelsDir('qwen3'), 'tokenizer.json'));
  const harmony = ['<|start|>', '<|end|>', '<|message|>', '<|channel|>', '<|constrain|>', '<|return|>', '<|call|>'];
  tok.addSpecialTokens(harmony);
  tok.save(join(dir, 'tokenizer.json'));
  const template = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'templates', 'gpt-oss-120b.jinja'), 'utf8');
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ chat_template: template, eos_token: '<|return|>', pad_token: '<|endoftext|>' }),
  );
  return dir;
}

test('harmony (gpt-oss): closers per turn kind; stop ids are <|return|> and <|call|>, never <|end|>', async () => {
  const setup = setupTokenizer(loadModelFolder(harmonyFolder()));
  const probe = await probeTemplate(setup);
  assert.equal(probe.problem, undefined);
  const id = (t: string): number => setup.tokenizer.tokenToId(t) as number;
  const byKind = Object.fromEntries(probe.closings.map((c) => [c.kind, c.tokens.join('')]));
  assert.equal(byKind['final'], '<|return|>');
  assert.equal(byKind['earlier'], '<|end|>');
  assert.equal(byKind['tool_call'], '<|call|>');
  assert.deepEqual(
    probe.stopIds,
    [id('<|return|>'), id('<|call|>')].sort((a, b) => a - b),
  );
  assert.ok(!probe.stopIds.includes(id('<|end|>')));
  assert.deepEqual(probe.turnHeaders, [[id('<|start|>')]]);
});

test('truncate_turns with train_on last trains the last kept assistant turn (its context is the original)', async () => {
  const setup = setupTokenizer(
    loadModelFolder(
      buildFixture('qwen3', {
        config: { chat_template: readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'templates', 'qwen2.5-7b-instruct.jinja'), 'utf8') },
      }),
    ),
  );
  const long = 'word '.repeat(200);
  const conv: Conversation = {
    messages: [
      { role: 'user', content: 'First?' },
      { role: 'assistant', content: 'One.' },
      { role: 'user', content: 'Second?' },
      { role: 'assistant', content: 'Two.' },
      { role: 'user', content: 'Third?' },
      { role: 'assistant', content: long },
    ],
  };
  const [full] = await createEncoder(setup, { trainOn: 'last' }).encode([{ conversation: conv, line: 1 }]);
  assert.ok(full?.ok);
  const maxLength = full.example.turns[1]!.eot + 5;
  const [r] = await createEncoder(setup, { trainOn: 'last', maxLength, truncation: 'truncate_turns' }).encode([
    { conversation: conv, line: 1 },
  ]);
  assert.ok(r?.ok && r.truncated, JSON.stringify(r));
  assert.equal(r.example.turns.length, 2, 'the over-long last turn was removed');
  assert.deepEqual(
    r.example.turns.map((t) => t.trained),
    [false, true],
    'the last kept turn is the trained one',
  );
  const sup = r.example.inputIds.filter((_, i) => r.example.labels[i] !== -100);
  assert.equal(await setup.tokenizer.decode(sup, false), 'Two.<|im_end|>');
  // An explicit train: false on that turn wins: the next shorter prefix is used.
  const off: Conversation = { messages: conv.messages.map((m, i) => (i === 3 ? { ...m, train: false } : m)) };
  const [r2] = await createEncoder(setup, { trainOn: 'last', maxLength, truncation: 'truncate_turns' }).encode([
    { conversation: off, line: 1 },
  ]);
  assert.ok(r2?.ok && r2.truncated);
  assert.deepEqual(
    r2.example.turns.map((t) => t.trained),
    [true],
  );
});

test('a token straddling header and reply is masked and counted; the probe reports the prompt is not a token prefix of the row', async () => {
  // Byte-level BPE merges ":\n\n" into one token: the row has it, the inference prompt ends with ":\n".
  const template =
    "{% for m in messages %}{{ m.role + ':\\n\\n' + m.content + '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}";
  const setup = setupTokenizer(loadModelFolder(buildFixture('qwen3', { config: { chat_template: template } })));
  const conv: Conversation = {
    messages: [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' },
    ],
  };
  const [r] = await createEncoder(setup).encode([{ conversation: conv, line: 1 }]);
  assert.ok(r?.ok, JSON.stringify(r));
  const turn = r.example.turns[0]!;
  assert.equal(turn.straddled, true);
  const straddler = turn.start - 1;
  assert.equal(r.example.labels[straddler], -100, 'the straddling token is masked');
  assert.equal(await setup.tokenizer.decode(r.example.inputIds.slice(turn.start, turn.eot + 1), false), 'Hello<|im_end|>');
  const probe = await probeTemplate(setup);
  assert.ok(probe.promptIsPrefix && !probe.promptIsPrefix.ok, JSON.stringify(probe.promptIsPrefix));
});
