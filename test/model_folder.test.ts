/** Loading Hugging Face model folders: field forms and clear errors for bad files. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { buildFixture, cleanupTemp, packageModelsDir, tempRoot, CHATML } from './helpers/fixtures.js';
import { loadModelFolder, generationEosIds } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { saveTokenizerFiles } from '../src/model/save.js';
import { isChatsftError } from '../src/errors.js';

after(cleanupTemp);

test('special tokens as AddedToken objects, named template lists, generation_config eos lists', () => {
  const dir = buildFixture('mistral', {
    config: {
      bos_token: { content: '<s>', lstrip: false, normalized: false, rstrip: false, single_word: false, __type: 'AddedToken' },
      chat_template: [
        { name: 'default', template: CHATML },
        { name: 'tool_use', template: '{{ messages[0].content }}' },
      ],
    },
    generationConfig: { eos_token_id: [2, 32000] },
  });
  const f = loadModelFolder(dir);
  assert.equal(f.bosToken, '<s>');
  assert.equal(f.chatTemplate, CHATML);
  assert.deepEqual(Object.keys(f.chatTemplates), ['default', 'tool_use']);
  assert.deepEqual(generationEosIds(f), [2, 32000]);
  assert.equal(f.paddingSide, 'left');
  assert.equal(f.addBosToken, true);
});

test('Llama 3 adds BOS through its post-processor, which counts as add_bos_token', () => {
  const f = loadModelFolder(buildFixture('llama3'));
  assert.equal(f.addBosToken, true);
  assert.equal(f.bosToken, '<|begin_of_text|>');
});

test('missing and corrupt files are errors naming the file', () => {
  const empty = join(tempRoot(), 'empty-model');
  mkdirSync(empty);
  assert.throws(
    () => loadModelFolder(empty),
    (e) => isChatsftError(e) && e.code === 'FILE_MISSING' && /tokenizer\.json/.test(e.message),
  );
  assert.throws(
    () => loadModelFolder(join(tempRoot(), 'nowhere')),
    (e) => isChatsftError(e) && e.code === 'FILE_MISSING',
  );

  const badCfg = join(tempRoot(), 'bad-config');
  mkdirSync(badCfg);
  symlinkSync(join(packageModelsDir('qwen3'), 'tokenizer.json'), join(badCfg, 'tokenizer.json'));
  writeFileSync(join(badCfg, 'tokenizer_config.json'), '{"eos_token": ');
  assert.throws(
    () => loadModelFolder(badCfg),
    (e) => isChatsftError(e) && e.code === 'FILE_CORRUPT' && /tokenizer_config\.json/.test(e.message),
  );

  const badTok = join(tempRoot(), 'bad-tokenizer');
  mkdirSync(badTok);
  writeFileSync(join(badTok, 'tokenizer.json'), '{"model": {"type": "nonsense"}}');
  assert.throws(
    () => loadModelFolder(badTok),
    (e) => isChatsftError(e) && e.code === 'FILE_CORRUPT' && /tokenizer\.json/.test(e.message),
  );

  const badSide = buildFixture('qwen3', { config: { padding_side: 'middle' } });
  assert.throws(
    () => loadModelFolder(badSide),
    (e) => isChatsftError(e) && /padding_side/.test(e.message),
  );
});

test('a model without a template needs --template, and the error says so', () => {
  const f = loadModelFolder(buildFixture('mistral'));
  assert.throws(
    () => setupTokenizer(f),
    (e) => isChatsftError(e) && e.code === 'TEMPLATE_MISSING' && /--template chatml/.test(e.message),
  );
});

test('pad policy: auto avoids EOS/EOT, eos is accepted with a warning, a new token is added', () => {
  const mistral = setupTokenizer(loadModelFolder(buildFixture('mistral-chatml')));
  assert.equal(mistral.padToken, '<unk>');
  const eos = setupTokenizer(loadModelFolder(buildFixture('mistral-chatml')), { pad: 'eos' });
  assert.equal(eos.padId, 32000);
  assert.match(eos.padWarning ?? '', /EOS\/EOT/);
  const llama = setupTokenizer(loadModelFolder(buildFixture('llama3')));
  assert.equal(llama.padToken, '<|pad|>');
  assert.equal(llama.padId, 128256);
  assert.deepEqual(llama.addedTokens, [{ content: '<|pad|>', id: 128256 }]);
  const custom = setupTokenizer(loadModelFolder(buildFixture('qwen3')), { pad: '<|vision_pad|>' });
  assert.equal(custom.padToken, '<|vision_pad|>');
  assert.equal(custom.addedTokens.length, 0, 'an existing token is reused');
});

test('saved tokenizer files carry the pad used, the template and the EOT among stop ids', async () => {
  const setup = setupTokenizer(loadModelFolder(buildFixture('mistral')), { template: 'chatml' });
  const out = join(tempRoot(), 'saved');
  saveTokenizerFiles(setup, out, { eotIds: [32000] });
  const f = loadModelFolder(out);
  assert.equal(f.padToken, '<unk>');
  assert.equal(f.eosToken, '<|im_end|>');
  assert.equal(f.chatTemplate, setup.template.source);
  assert.deepEqual(generationEosIds(f), [2, 32000]);
  assert.equal(f.tokenizer.tokenToId('<|im_start|>'), 32001);
  const again = setupTokenizer(f);
  assert.deepEqual(again.addedTokens, [], 'reloading adds nothing: the tokens are in the saved vocabulary');
  const enc = await f.tokenizer.encode('<|im_start|>user\nhi<|im_end|>', null, { addSpecialTokens: false });
  assert.deepEqual([enc.getIds()[0], enc.getIds().at(-1)], [32001, 32000]);
});
