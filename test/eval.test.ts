import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData, renderChatml, toJsonl } from '../src/demo/data.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { createModel, disposeModel, evalLoss, initEngine, makeLlamaConfig, tf } from '../src/engine/index.js';
import { chatRuntime, evaluateModel, evalPrompts, meanLoss, setupForInference, type GenerateBatch } from '../src/eval/index.js';
import { loadModelFolder } from '../src/model/folder.js';
import { prepareRows } from '../src/prepare/prepare.js';
import { collate } from '../src/batch/collate.js';
import { buildFixture, cleanupTemp } from './helpers/fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'chatsft-eval-'));
after(() => {
  rmSync(root, { recursive: true, force: true });
  cleanupTemp();
});

const data = generateDemoData({ seed: 3, train: 120, heldout: 12, task: 'A' });
const heldout = join(root, 'heldout.jsonl');
// Line 13 ends with a user turn and line 14 is not JSON: both skipped for generation.
writeFileSync(heldout, toJsonl(data.heldout) + JSON.stringify({ messages: [{ role: 'user', content: 'Spell cat.' }] }) + '\nnot json\n');

async function demoFolder(): Promise<{ dir: string; imStart: number; imEnd: number }> {
  const dir = join(root, 'model');
  const info = await writeDemoModelFolder(dir, data.train.map(renderChatml), { vocabSize: 300 });
  return { dir, imStart: info.ids.imStart, imEnd: info.ids.imEnd };
}

test('prompts are the conversation minus its last assistant turn, plus the generation prompt', async () => {
  const { dir } = await demoFolder();
  const setup = setupForInference(loadModelFolder(dir), 'model');
  const { prompts, skipped } = await evalPrompts(setup, heldout);
  assert.equal(prompts.length, data.heldout.length);
  assert.equal(skipped, 2);
  for (const [i, p] of prompts.entries()) {
    const conv = data.heldout[i]!;
    const text = await setup.tokenizer.decode(p.ids, false);
    const expected = renderChatml({ messages: conv.messages.slice(0, -1) }) + '<|im_start|>assistant\n';
    assert.equal(text, expected);
    const answer = conv.messages[conv.messages.length - 1]!.content;
    const ref = (await setup.tokenizer.encode(answer, null, { addSpecialTokens: false })).getIds();
    assert.equal(p.referenceTokens, ref.length);
  }
});

test('stop rate, lengths and runaway endings come from the generator results', async () => {
  const { dir, imStart, imEnd } = await demoFolder();
  const setup = setupForInference(loadModelFolder(dir), 'model');
  const rt = await chatRuntime(setup);
  assert.deepEqual(rt.stopIds, [imEnd]);
  assert.deepEqual(rt.turnHeaders, [[imStart]]);
  assert.deepEqual(rt.stopSources, { templateEot: [imEnd], generationConfigEos: [imEnd], tokenizerEos: imEnd });

  // Row k of each call: k % 3 == 0 stops, 1 runs on into a new turn, 2 runs on inside text.
  const seen: number[][] = [];
  const fake: GenerateBatch = async (prompts, opts) => {
    assert.deepEqual(opts.stopIds, [imEnd]);
    seen.push(...prompts);
    return prompts.map((p, k) => {
      const kind = (seen.length - prompts.length + k) % 3;
      if (kind === 0) return { tokens: [5, 6], stoppedBy: imEnd, hitMaxNewTokens: false };
      const tokens = Array.from({ length: opts.maxNewTokens }, (_, i) => 40 + (i % 7));
      if (kind === 1) tokens[3] = imStart;
      return { tokens, stoppedBy: null, hitMaxNewTokens: true };
    });
  };
  const { report, rows } = await evaluateModel({ setup, data: heldout, generateBatch: fake, maxNewTokens: 10, batchSize: 5 });
  assert.equal(seen.length, 12);
  assert.equal(report.examples, 12);
  assert.equal(report.skipped, 2);
  assert.equal(report.stop_rate, 4 / 12);
  assert.equal(report.mean_new_tokens, (4 * 2 + 8 * 10) / 12);
  assert.equal(report.p95_new_tokens, 10);
  assert.deepEqual(report.runaways, { total: 8, new_turn_header: 4, inside_text: 4 });
  assert.deepEqual(report.stopped_by, { [String(imEnd)]: 4 });
  assert.equal(report.loss, null, 'no model, no loss');
  assert.equal(report.max_new_tokens, 10);
  assert.ok(report.reference_mean_tokens !== null && report.reference_mean_tokens > 0);
  assert.equal(rows.filter((r) => r.ending === 'runaway_new_turn').length, 4);
});

test('loss is the mean CE over supervised tokens as prepared; no tensors leak', async () => {
  const { dir } = await demoFolder();
  await initEngine();
  const setup = setupForInference(loadModelFolder(dir), 'model');
  const model = createModel(
    makeLlamaConfig({
      vocabSize: setup.vocabSize,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 1,
      numAttentionHeads: 4,
      tieWordEmbeddings: true,
    }),
    1,
  );
  try {
    // Reference: one conversation at a time.
    const { rows } = await prepareRows(setup, heldout);
    let sum = 0;
    let count = 0;
    for (const r of rows) {
      const one = evalLoss(model, collate([r], { padId: setup.padId, paddingSide: 'right' }));
      sum += one.sum;
      count += one.count;
    }
    assert.ok(Math.abs((await meanLoss(model, rows, setup, 5)).loss - sum / count) < 1e-4);

    await evaluateModel({ setup, data: heldout, model, maxNewTokens: 3, lossOnly: true }); // warm-up
    const before = tf.memory().numTensors;
    const { report } = await evaluateModel({ setup, data: heldout, model, maxNewTokens: 4, batchSize: 4 });
    assert.equal(tf.memory().numTensors, before);
    assert.ok(report.loss !== null && Math.abs(report.loss - sum / count) < 1e-4, `loss ${report.loss} vs ${sum / count}`);
    assert.equal(report.loss_examples, 12);
    assert.equal(report.examples, 12);
    // A random model: near-uniform logits over the vocabulary.
    assert.ok(report.loss! > Math.log(setup.vocabSize) - 1.5 && report.loss! < Math.log(setup.vocabSize) + 1.5);
  } finally {
    disposeModel(model);
  }
});

test('turn headers and stop ids of other templates: Llama 3 and Gemma 3', async () => {
  const llama = setupForInference(
    loadModelFolder(buildFixture('llama3', { generationConfig: { eos_token_id: [128001, 128008, 128009] } })),
    'model',
  );
  const rl = await chatRuntime(llama);
  const id = (s: string): number => llama.tokenizer.tokenToId(s)!;
  assert.ok(rl.stopIds.includes(id('<|eot_id|>')), 'template EOT');
  assert.ok(rl.stopIds.includes(128001) && rl.stopIds.includes(128008));
  // The first token of the generation prompt (eval/turn_header.ts, shared with the llama.cpp path).
  assert.deepEqual(rl.turnHeaders, [[id('<|start_header_id|>')]]);

  // This Gemma 3 tokenizer's eos is <end_of_turn>; generation_config adds <eos>.
  const gemma = setupForInference(loadModelFolder(buildFixture('gemma3', { generationConfig: { eos_token_id: 1 } })), 'model');
  const rg = await chatRuntime(gemma);
  const gid = (s: string): number => gemma.tokenizer.tokenToId(s)!;
  assert.ok(rg.stopSources.templateEot.includes(gid('<end_of_turn>')));
  assert.deepEqual(
    rg.stopIds,
    [gid('<eos>'), gid('<end_of_turn>')].sort((a, b) => a - b),
  );
  assert.deepEqual(rg.turnHeaders, [[gid('<start_of_turn>')]]);
});
