/**
 * One stop-id policy (hf/stop_ids.ts): for every fixture template (the four
 * npm tokenizers' own, and every real template of the corpus in
 * test/fixtures/templates/index.json on its fixture tokenizer), the stop ids the trainer writes into a model folder,
 * those `export --format hf` writes and those `export --format gguf` carries
 * (its eos + eot slots, plus the ids it reports as dropped) are the same set,
 * and include the template's EOT. Each source folder's generation_config names
 * an id no other source has, the case where HF export used to drop it.
 *
 * The ids come from the real writers: saveTokenizerFiles (what training's
 * finalizeFolder writes), exportHf and exportGguf, over a one-layer model of
 * constant weights (no training run: the stop ids do not depend on them).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { gguf } from '@huggingface/gguf';
import { ALL_FIXTURES, buildFixture, cleanupTemp, tempRoot } from './helpers/fixtures.js';
import { corpusFolderKey, corpusIndex, templateFile, writeCorpusFolder } from './helpers/template_corpus.js';
import type { ModelFolder } from '../src/model/folder.js';
import type { TokenizerSetup } from '../src/tokenize/setup.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { saveTokenizerFiles, stopIdsOf } from '../src/model/save.js';
import { templateEotIds } from '../src/model/eot.js';
import { probeTemplate } from '../src/template/probe.js';
import { writeSafetensors } from '../src/engine/safetensors.js';
import { exportHf } from '../src/export/hf.js';
import { exportGguf } from '../src/export/gguf.js';

after(cleanupTemp);

const D = 8;
const FF = 16;

/** A one-layer Llama with tied embeddings over `V` rows: the smallest folder both exporters accept. */
function writeTinyModel(dir: string, V: number, eos: number): void {
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      model_type: 'llama',
      vocab_size: V,
      hidden_size: D,
      intermediate_size: FF,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: 64,
      tie_word_embeddings: true,
      eos_token_id: eos,
    }),
  );
  const t = (shape: number[]) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.01) });
  const p = 'model.layers.0.';
  const tensors = new Map([
    ['model.embed_tokens.weight', t([V, D])],
    ['model.norm.weight', t([D])],
    [p + 'input_layernorm.weight', t([D])],
    [p + 'post_attention_layernorm.weight', t([D])],
    [p + 'self_attn.q_proj.weight', t([D, D])],
    [p + 'self_attn.k_proj.weight', t([4, D])],
    [p + 'self_attn.v_proj.weight', t([4, D])],
    [p + 'self_attn.o_proj.weight', t([D, D])],
    [p + 'mlp.gate_proj.weight', t([FF, D])],
    [p + 'mlp.up_proj.weight', t([FF, D])],
    [p + 'mlp.down_proj.weight', t([D, FF])],
  ]);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
}

const sorted = (xs: Iterable<number>): number[] => [...new Set(xs)].sort((a, b) => a - b);

/**
 * Write `setup`'s trained folder, export it both ways and check the three stop-id sets agree.
 * `extraGenId`: an id only the source generation_config names (must survive all three).
 */
async function checkAgreement(label: string, setup: TokenizerSetup, extraGenId: number | undefined): Promise<void> {
  const eot = await templateEotIds(setup);
  assert.ok(eot.length > 0, 'the template closes assistant turns with a token');

  // What training writes (trainFromConfig's finalizeFolder), next to the weights.
  const trained = path.join(tempRoot(), `${label}-trained`);
  fs.mkdirSync(trained);
  writeTinyModel(trained, setup.vocabSize, setup.eosId ?? (eot[0] as number));
  saveTokenizerFiles(setup, trained, { eotIds: eot });
  const written = JSON.parse(fs.readFileSync(path.join(trained, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
  const trainIds = sorted(written.eos_token_id);
  for (const id of [...eot, ...(extraGenId === undefined ? [] : [extraGenId])])
    assert.ok(trainIds.includes(id), `trained folder stops on ${id}`);

  const eotToken = setup.tokenizer.idToToken(eot[0] as number)!;
  const hf = exportHf(trained, path.join(tempRoot(), `${label}-hf`), { eotToken });
  const hfGen = JSON.parse(fs.readFileSync(path.join(hf.dir, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
  assert.deepEqual(sorted(hfGen.eos_token_id), trainIds, 'HF generation_config');
  assert.deepEqual(sorted(hf.eosTokenIds), trainIds, 'HF config.json');

  // GGUF has one eos and one eot slot: the rule (gguf.ts) is eot = the template's EOT, and every other
  // stop id that fits neither slot is reported in droppedStopIds, so slots + drops = the policy's set.
  const file = path.join(tempRoot(), `${label}.gguf`);
  const g = exportGguf(trained, file, { eotToken, dtype: 'f32' });
  const meta = (await gguf(file, { allowLocalFile: true })).metadata as unknown as Record<string, unknown>;
  const slots = [meta['tokenizer.ggml.eos_token_id'], meta['tokenizer.ggml.eot_token_id']] as number[];
  assert.equal(meta['tokenizer.ggml.eot_token_id'], eot[0], 'the GGUF eot slot is the template EOT');
  assert.deepEqual(sorted([...slots, ...g.droppedStopIds]), trainIds, 'GGUF slots + reported drops');
  for (const id of g.droppedStopIds) assert.ok(!slots.includes(id), `dropped id ${id} is not in a slot`);

  // Free the disk as we go: 50+ templates × (trained + HF + GGUF) of a 150k-row vocabulary.
  for (const p of [trained, hf.dir, file]) fs.rmSync(p, { recursive: true, force: true });
}

for (const name of ALL_FIXTURES) {
  test(`${name}: train-written, HF-exported and GGUF-exported stop ids agree`, async () => {
    // An id only generation_config names (5 is an ordinary token in every fixture vocabulary).
    const src = buildFixture(name, { generationConfig: { eos_token_id: [5] } });
    const setup = setupTokenizer(loadModelFolder(src), { template: 'model' });
    await checkAgreement(name, setup, 5);
  });
}

// Every real template of the corpus, on its fixture tokenizer (folders shared as in templates_corpus.test.ts).
// Templates that iterate `tools` without a guard (Hermes 3, Phi-4-mini) are probed with a tool list.
{
  const templates = corpusIndex().templates;
  const folders = new Map<string, ModelFolder>();
  const lastUse = new Map<string, string>();
  for (const t of templates) lastUse.set(corpusFolderKey(t), t.name);
  // The three writers see only the folder's tokenizer, configs and the EOT token, so templates with the
  // same fixture tokenizer, EOT ids, eos and trained stop-id set export identically: run the exporters
  // once per such signature (a 150k-row vocabulary costs seconds per export) and check the rest against it.
  const checked = new Set<string>();
  for (const t of templates) {
    test(`corpus ${t.name} (${t.family}): train-written, HF-exported and GGUF-exported stop ids agree`, async (ctx) => {
      const key = corpusFolderKey(t);
      let folder = folders.get(key);
      if (!folder) {
        const dir = path.join(tempRoot(), `corpus-model-${folders.size}`);
        writeCorpusFolder(t, dir);
        fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [5] }));
        folder = loadModelFolder(dir);
        folders.set(key, folder);
      }
      try {
        const setup = setupTokenizer(folder, { template: templateFile(t), templateVars: t.vars ?? {} });
        const probe = await probeTemplate(setup);
        assert.equal(probe.problem, undefined, `probe problem: ${probe.problem?.message}`);
        const eot = probe.stopIds;
        const signature = JSON.stringify([key, eot, setup.eosId, stopIdsOf(setup, eot)]);
        if (checked.has(signature)) {
          ctx.diagnostic('same tokenizer, EOT and stop ids as a template already exported');
          return;
        }
        await checkAgreement(`corpus-${t.name}`, setup, 5);
        checked.add(signature);
      } finally {
        // Each loaded tokenizer holds hundreds of MB: forget it after its last template.
        if (lastUse.get(key) === t.name) folders.delete(key);
      }
    });
  }
}
