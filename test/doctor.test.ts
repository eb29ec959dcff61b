/**
 * `runDoctor`: one test per finding code of SPEC §7, each on a setup built
 * to trigger it and on a clean one that must not. Fixtures are the real
 * tokenizers of test/helpers/fixtures.ts, modified per test; data is a few
 * generated conversations.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildFixture, cleanupTemp, CHATML, writeJsonl, type FixtureName, type FixtureOptions } from './helpers/fixtures.js';
import { loadConfig } from '../src/config/load.js';
import { runDoctor, type CollatorName, type DoctorReport, type Finding, type FindingCode } from '../src/doctor/index.js';

after(() => cleanupTemp());

type Flags = Record<string, string | boolean>;

async function doctor(model: string, flags: Flags = {}, simulate?: CollatorName[]): Promise<DoctorReport> {
  return runDoctor({ config: loadConfig({ flags: { model, ...flags } }), ...(simulate ? { simulate } : {}) });
}

function codes(r: DoctorReport): FindingCode[] {
  return r.findings.map((f) => f.code);
}

function get(r: DoctorReport, code: FindingCode): Finding {
  const f = r.findings.find((x) => x.code === code);
  assert.ok(f, `expected ${code} among ${codes(r).join(', ')}`);
  return f;
}

function absent(r: DoctorReport, code: FindingCode): void {
  assert.ok(!codes(r).includes(code), `did not expect ${code}: ${JSON.stringify(r.findings.find((f) => f.code === code))}`);
}

// Fixture folders are cheap (the Mistral vocabulary loads in ~0.1 s) but each
// run needs its own: setupTokenizer adds tokens to the loaded tokenizer.
const fixture = (name: FixtureName, opts?: FixtureOptions): string => buildFixture(name, opts);
/** OpenHermes-Mistral made clean: a real pad (unk) and right padding. */
const cleanMistral = (opts: FixtureOptions = {}): string =>
  fixture('mistral-chatml', { ...opts, config: { pad_token: '<unk>', padding_side: 'right', ...(opts.config ?? {}) } });

const conv = (...turns: Array<[string, string]>) => ({ messages: turns.map(([role, content]) => ({ role, content })) });
const GOOD = [
  conv(['user', 'Hi'], ['assistant', 'Hello!']),
  conv(['system', 'Be brief.'], ['user', 'What is 1 + 1?'], ['assistant', '2.'], ['user', 'And 2 + 2?'], ['assistant', '4.']),
  conv(['user', 'Name a fruit.'], ['assistant', 'Apple.']),
];

describe('doctor: clean setup', () => {
  test('a clean setup has no errors or warnings and reports its EOT and stop ids', async () => {
    const r = await doctor(cleanMistral(), { data: writeJsonl('clean.jsonl', GOOD), 'max-length': '512' }, ['chatsft', 'hf-lm-collator']);
    assert.deepEqual(
      r.findings.filter((f) => f.severity !== 'info'),
      [],
    );
    assert.equal(r.summary.errors, 0);
    assert.deepEqual(r.summary.eot, ['<|im_end|> (32000)']);
    assert.deepEqual(r.summary.stop_ids, ['<|im_end|> (32000)']);
    assert.deepEqual(r.summary.eot_supervised['chatsft'], { trained_turns: 4, supervised_eot: 4 });
    assert.deepEqual(r.summary.eot_supervised['hf-lm-collator'], { trained_turns: 4, supervised_eot: 4 });
    assert.ok(codes(r).includes('EOT_FOUND') && codes(r).includes('STOP_IDS'));
  });
});

describe('doctor: tokenizer config', () => {
  test('PAD_MISSING', async () => {
    const f = get(await doctor(fixture('mistral-chatml')), 'PAD_MISSING');
    assert.equal(f.severity, 'warning');
    assert.equal(f.evidence['chatsft_pad'], '<unk> (0)');
    assert.match(f.hint, /pad_token.*<unk>/);
    absent(await doctor(cleanMistral()), 'PAD_MISSING');
  });

  test('PAD_IS_EOS: configured pad eos is an error under a pad-masking collator, a warning otherwise', async () => {
    const hf = get(await doctor(fixture('mistral-chatml'), { pad: 'eos' }, ['hf-lm-collator']), 'PAD_IS_EOS');
    assert.equal(hf.severity, 'error');
    assert.equal(hf.evidence['pad'], '<|im_end|> (32000)');
    assert.equal(hf.evidence['eot_kept_under_hf-lm-collator'], '0 of 6');
    assert.match(hf.hint, /--pad auto/);
    const own = get(await doctor(fixture('mistral-chatml'), { pad: 'eos' }), 'PAD_IS_EOS');
    assert.equal(own.severity, 'warning');
    // The tokenizer's own pad = EOS: other trainers would use it; chatsft's pad auto avoids it.
    const tokPad = get(await doctor(fixture('mistral-chatml', { config: { pad_token: '<|im_end|>' } })), 'PAD_IS_EOS');
    assert.equal(tokPad.severity, 'warning');
    assert.equal(tokPad.evidence['source'], 'tokenizer_config.json pad_token');
    assert.equal(tokPad.evidence['chatsft_pad'], '<unk> (0)');
    // pad = an eos the template never renders: nothing is erased, so only a warning.
    const unused = await doctor(cleanMistral({ config: { eos_token: '</s>' } }), { pad: 'eos' }, ['hf-lm-collator']);
    assert.equal(get(unused, 'PAD_IS_EOS').severity, 'warning');
    assert.deepEqual(unused.summary.eot_supervised['hf-lm-collator'], { trained_turns: 6, supervised_eot: 6 });
    absent(await doctor(cleanMistral(), {}, ['hf-lm-collator']), 'PAD_IS_EOS');
  });

  test('PADDING_LEFT: from the tokenizer config or from --padding-side', async () => {
    const f = get(await doctor(fixture('mistral-chatml'), { pad: 'eos' }), 'PADDING_LEFT');
    assert.equal(f.evidence['tokenizer_padding_side'], 'left');
    assert.equal(f.evidence['pad_is_eos_or_eot'], true);
    const flag = get(await doctor(cleanMistral(), { 'padding-side': 'left' }), 'PADDING_LEFT');
    assert.equal(flag.hint, '--padding-side right');
    absent(await doctor(cleanMistral()), 'PADDING_LEFT');
  });

  test('BOS_DOUBLED: template renders BOS and the tokenizer adds it', async () => {
    const f = get(await doctor(cleanMistral({ config: { chat_template: `{{ bos_token }}${CHATML}` } })), 'BOS_DOUBLED');
    assert.equal(f.severity, 'warning');
    assert.deepEqual((f.evidence['first_ids_with_special_tokens'] as number[]).slice(0, 2), [1, 1]);
    // Same template, tokenizer not adding BOS: no doubling.
    absent(await doctor(cleanMistral({ config: { chat_template: `{{ bos_token }}${CHATML}`, add_bos_token: false } })), 'BOS_DOUBLED');
    absent(await doctor(cleanMistral()), 'BOS_DOUBLED');
  });

  test('BOS_DOUBLED on Llama 3 (post-processor adds <|begin_of_text|>)', async () => {
    const f = get(await doctor(fixture('llama3')), 'BOS_DOUBLED');
    assert.deepEqual(f.evidence['first_tokens'], ['<|begin_of_text|>', '<|begin_of_text|>', '<|start_header_id|>']);
  });
});

describe('doctor: template', () => {
  test('TEMPLATE_MISSING, with the rest of the audit assuming ChatML', async () => {
    const r = await doctor(fixture('mistral'));
    assert.equal(get(r, 'TEMPLATE_MISSING').severity, 'error');
    assert.equal(r.summary.template, 'chatml');
    absent(await doctor(fixture('mistral'), { template: 'chatml' }), 'TEMPLATE_MISSING');
  });

  test('TEMPLATE_NO_EOT: a "role: content" template', async () => {
    const plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    const r = await doctor(cleanMistral({ config: { chat_template: plain } }));
    const f = get(r, 'TEMPLATE_NO_EOT');
    assert.equal(f.severity, 'error');
    assert.equal(f.evidence['after_assistant_content'], '\nuser: And 3 + 3?\nassistant: 3 + 3 = 6.\n');
    assert.deepEqual(r.summary.eot, []);
    absent(await doctor(cleanMistral()), 'TEMPLATE_NO_EOT');
  });

  test('EOT_NOT_SINGLE_TOKEN: ChatML text on a vocabulary without <|im_end|>', async () => {
    const f = get(await doctor(fixture('mistral', { config: { chat_template: CHATML } })), 'EOT_NOT_SINGLE_TOKEN');
    assert.equal(f.evidence['closing_string'], '<|im_end|>');
    assert.ok((f.evidence['token_count'] as number) > 1);
    assert.match(f.hint, /--template chatml/);
    absent(await doctor(cleanMistral()), 'EOT_NOT_SINGLE_TOKEN');
  });

  test('TEMPLATE_BROKEN: a template that drops assistant content', async () => {
    const drop =
      "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
    const f = get(await doctor(cleanMistral({ config: { chat_template: drop } })), 'TEMPLATE_BROKEN');
    assert.match(String(f.evidence['error']), /cannot locate assistant message/);
    absent(await doctor(cleanMistral()), 'TEMPLATE_BROKEN');
  });
});

describe('doctor: EOT discovery', () => {
  test('finds the EOT inside {% generation %} blocks and after Llama 2 style " </s>"', async () => {
    const gen =
      "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}" +
      "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
    const llama2 =
      "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}";
    const g = await doctor(cleanMistral({ config: { chat_template: gen } }));
    assert.deepEqual(g.summary.eot, ['<|im_end|> (32000)']);
    assert.equal(g.summary.errors, 0);
    const l = await doctor(fixture('mistral', { config: { chat_template: llama2, pad_token: '<unk>', padding_side: 'right' } }));
    assert.deepEqual(l.summary.eot, ['</s> (2)']);
    assert.deepEqual(l.summary.eot_supervised['chatsft'], { trained_turns: 6, supervised_eot: 6 });
    assert.equal(l.summary.errors, 0);
  });
});

describe('doctor: stop ids', () => {
  test('STOP_IDS_MISSING_EOT: ChatML Mistral whose generation_config still says </s>', async () => {
    const f = get(await doctor(cleanMistral({ generationConfig: { eos_token_id: 2 } })), 'STOP_IDS_MISSING_EOT');
    assert.equal(f.severity, 'error');
    assert.deepEqual(f.evidence['stop_ids'], ['</s> (2)']);
    assert.equal(f.evidence['source'], 'generation_config.json eos_token_id');
    assert.match(f.hint, /\[2,32000\]/);
    absent(await doctor(cleanMistral({ generationConfig: { eos_token_id: [2, 32000] } })), 'STOP_IDS_MISSING_EOT');
  });

  test('STOP_IDS_MISSING_EOT: Llama 3 base config (eos <|end_of_text|>, turns end with <|eot_id|>)', async () => {
    const f = get(await doctor(fixture('llama3', { config: { eos_token: '<|end_of_text|>' } })), 'STOP_IDS_MISSING_EOT');
    assert.deepEqual(f.evidence['missing'], ['<|eot_id|> (128009)']);
    assert.deepEqual(f.evidence['stop_ids'], ['<|end_of_text|> (128001)']);
  });
});

describe('doctor: data', () => {
  test('DATA_INVALID names the lines', async () => {
    const data = writeJsonl('invalid.jsonl', [GOOD[0], '{not json', { messages: [{ role: 'bot', content: 'x' }] }, GOOD[1]]);
    const f = get(await doctor(cleanMistral(), { data }), 'DATA_INVALID');
    assert.deepEqual(f.evidence['example_lines'], [2, 3]);
    assert.match(String((f.evidence['examples'] as string[])[1]), /invalid\.jsonl:3 messages\[0\]\.role: unknown role 'bot'/);
    absent(await doctor(cleanMistral(), { data: writeJsonl('valid.jsonl', GOOD) }), 'DATA_INVALID');
  });

  test('CONTENT_HAS_SPECIAL_TOKENS', async () => {
    const data = writeJsonl('special.jsonl', [GOOD[0], conv(['user', 'end it <|im_end|> now'], ['assistant', 'ok'])]);
    const f = get(await doctor(cleanMistral(), { data }), 'CONTENT_HAS_SPECIAL_TOKENS');
    assert.deepEqual(f.evidence['example_lines'], [2]);
    assert.deepEqual(f.evidence['tokens'], { '<|im_end|>': 1 });
    const allowed = get(await doctor(cleanMistral(), { data, 'allow-special-tokens-in-content': true }), 'CONTENT_HAS_SPECIAL_TOKENS');
    assert.match(allowed.message, /real control tokens/);
    absent(await doctor(cleanMistral(), { data: writeJsonl('nospecial.jsonl', GOOD) }), 'CONTENT_HAS_SPECIAL_TOKENS');
  });

  test('NO_TRAINABLE_TOKENS', async () => {
    const off = {
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hey', train: false },
      ],
    };
    const data = writeJsonl('untrainable.jsonl', [GOOD[0], conv(['user', 'only a question']), off]);
    const f = get(await doctor(cleanMistral(), { data }), 'NO_TRAINABLE_TOKENS');
    assert.equal(f.severity, 'warning');
    assert.deepEqual(f.evidence['example_lines'], [2, 3]);
    const none = get(await doctor(cleanMistral(), { data: writeJsonl('none.jsonl', [off]) }), 'NO_TRAINABLE_TOKENS');
    assert.equal(none.severity, 'error');
    absent(await doctor(cleanMistral(), { data: writeJsonl('trainable.jsonl', GOOD) }), 'NO_TRAINABLE_TOKENS');
  });

  test('TRUNCATION_CUTS_EOT counts what drop and truncate_turns would do', async () => {
    const long = 'word '.repeat(60).trim();
    // Line 2: the first assistant turn fits in 40 tokens, the second one's EOT does not.
    const data = writeJsonl('long.jsonl', [GOOD[0], conv(['user', 'Hi'], ['assistant', 'Hello!'], ['user', 'More?'], ['assistant', long])]);
    const r = await doctor(cleanMistral(), { data, 'max-length': '40' }, ['chatsft', 'hf-lm-collator']);
    const f = get(r, 'TRUNCATION_CUTS_EOT');
    assert.equal(f.severity, 'warning');
    assert.equal(f.evidence['examples_over_length'], 1);
    assert.equal(f.evidence['trained_turns_with_eot_past_max_length'], 1);
    assert.deepEqual(f.evidence['example_lines'], [2]);
    assert.deepEqual(f.evidence['drop'], { examples_dropped: 1, trained_turns_lost: 2 });
    assert.deepEqual(f.evidence['truncate_turns'], { trained_turns_removed: 1, examples_dropped: 0 });
    // A trainer that cuts rows at max_length loses that EOT; chatsft drops the example instead.
    assert.deepEqual(r.summary.eot_supervised['hf-lm-collator'], { trained_turns: 3, supervised_eot: 2 });
    assert.deepEqual(r.summary.eot_supervised['chatsft'], { trained_turns: 1, supervised_eot: 1 });
    const kept = await doctor(cleanMistral(), { data, 'max-length': '40', truncation: 'truncate_turns' });
    assert.deepEqual(kept.summary.eot_supervised['chatsft'], { trained_turns: 2, supervised_eot: 2 });
    absent(await doctor(cleanMistral(), { data, 'max-length': '4096' }), 'TRUNCATION_CUTS_EOT');
  });
});

describe('doctor: settings and collators', () => {
  test('NEW_TOKENS_UNTRAINED: ChatML tokens added for a LoRA run that never trains embeddings', async () => {
    const f = get(
      await doctor(fixture('mistral'), { template: 'chatml', lora: true, 'lora-train-embeddings': 'none' }),
      'NEW_TOKENS_UNTRAINED',
    );
    assert.equal(f.severity, 'error');
    assert.equal(f.evidence['eot_is_new'], true);
    assert.deepEqual(f.evidence['tokens'], ['<|im_end|> (32000): added by chatsft', '<|im_start|> (32001): added by chatsft']);
    assert.match(f.hint, /new_tokens/);
    absent(await doctor(fixture('mistral'), { template: 'chatml', lora: true }), 'NEW_TOKENS_UNTRAINED');
    absent(await doctor(fixture('mistral'), { template: 'chatml' }), 'NEW_TOKENS_UNTRAINED');
  });

  test('EOT_UNSUPERVISED: OpenHermes-Mistral with pad eos under hf-lm-collator keeps 0 of N EOTs (SPEC §1)', async () => {
    const data = writeJsonl('hermes.jsonl', GOOD);
    const r = await doctor(fixture('mistral-chatml'), { data, pad: 'eos' }, ['hf-lm-collator', 'hf-completion-collator', 'chatsft']);
    const lost = r.findings.filter((f) => f.code === 'EOT_UNSUPERVISED');
    assert.deepEqual(
      lost.map((f) => f.evidence['collator']),
      ['hf-lm-collator', 'hf-completion-collator'],
    );
    assert.match((lost[0] as Finding).message, /^hf-lm-collator: 0 of 4 trained assistant turns keep their EOT/);
    assert.deepEqual((lost[0] as Finding).evidence['example_lines'], [1, 2, 3]);
    assert.deepEqual(r.summary.eot_supervised['chatsft'], { trained_turns: 4, supervised_eot: 4 });
    assert.equal(r.summary.errors > 0, true);
    // chatsft's own collator with the same pad keeps every EOT.
    absent(await doctor(fixture('mistral-chatml'), { data, pad: 'eos' }, ['chatsft']), 'EOT_UNSUPERVISED');
    // Without --data the built-in sample is simulated.
    const sample = get(await doctor(fixture('mistral-chatml'), { pad: 'eos' }, ['hf-lm-collator']), 'EOT_UNSUPERVISED');
    assert.match(sample.message, /0 of 6 /);
    assert.match(String(sample.evidence['sample']), /built-in sample/);
  });
});
