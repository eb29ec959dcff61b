/**
 * The stop-rate summary recorded during training (eval/stop_rate.ts), the
 * held-out prompts it generates from (eval/heldout.ts) and the one turn-header
 * definition (eval/turn_header.ts), on hand-made ids and real templates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarizeGenerations, outcomeOfSequence, stopRateDropWarning } from '../src/eval/stop_rate.js';
import { heldOutPrompts, promptOfRow, splitHeldOut } from '../src/eval/heldout.js';
import { turnHeaderText, turnHeaderIds } from '../src/template/turn_header.js';
import { compileTemplate, CHATML_TEMPLATE } from '../src/template/render.js';
import { lossCurveSvg, stepTicks, type MetricsLine } from '../src/train/metrics.js';
import type { Row } from '../src/batch/types.js';

const STOP = 2;
const HEADER = 1;

test('summarizeGenerations counts stops, new tokens (stop id excluded) and runaways into a new turn', () => {
  const s = summarizeGenerations(
    [
      [5, 6, STOP], // stopped after 2 tokens
      [5, STOP, 9, 9], // stopped after 1; what follows the stop id is ignored
      [5, HEADER, 7, 7], // ran to the limit after opening a turn
      [5, 5, 5, 5], // ran to the limit inside text
      [5], // ended early without a stop id (counts neither way)
    ],
    { stopIds: [STOP], turnHeaders: [[HEADER]], maxNewTokens: 4 },
  );
  assert.equal(s.examples, 5);
  assert.equal(s.stop_rate, 2 / 5);
  assert.equal(s.mean_new_tokens, (2 + 1 + 4 + 4 + 1) / 5);
  assert.equal(s.runaway_new_turn, 1 / 5);
  assert.ok(Number.isNaN(summarizeGenerations([], { stopIds: [STOP], turnHeaders: [], maxNewTokens: 4 }).stop_rate));
  assert.deepEqual(outcomeOfSequence([3, 4], new Set([STOP]), 2), { tokens: [3, 4], stoppedBy: null, hitMaxNewTokens: true });
});

test('stopRateDropWarning: only a model that stopped and now stops much less often', () => {
  assert.match(stopRateDropWarning(0.9, 0.1) ?? '', /90%.*10%/);
  assert.equal(stopRateDropWarning(0.9, 0.8), null);
  assert.equal(stopRateDropWarning(0.2, 0), null, 'never stopped to begin with');
  assert.equal(stopRateDropWarning(null, 0), null);
});

test('promptOfRow: everything before the last supervised run, in the last packed segment', () => {
  const I = -100;
  const row: Row = { inputIds: [10, 11, 12, 13, 14, 15, 16], labels: [I, I, 12, I, I, 15, 16] };
  assert.deepEqual(promptOfRow(row), [10, 11, 12, 13, 14]);
  const packed: Row = { inputIds: [1, 2, 3, 4, 5, 6], labels: [I, 2, 3, I, I, 6], seqLengths: [3, 3] };
  assert.deepEqual(promptOfRow(packed), [4, 5]);
  assert.equal(promptOfRow({ inputIds: [1, 2], labels: [1, 2] }), null, 'train_on all: no prompt');
  const rows = Array.from({ length: 30 }, (_, i): Row => ({ inputIds: [i, 100, 101], labels: [I, 100, 101] }));
  const { train, heldOut } = splitHeldOut(rows, 32);
  assert.equal(heldOut.length, 3, 'at most a tenth');
  assert.equal(train.length + heldOut.length, 30);
  assert.ok(heldOut.every((r) => !train.includes(r)));
  assert.deepEqual(heldOutPrompts(heldOut, 2).length, 2);
});

test('turn header: the first token of the generation prompt (ChatML), or of a user turn when the prompt is empty', () => {
  const chatml = compileTemplate(CHATML_TEMPLATE, 'chatml');
  assert.equal(turnHeaderText(chatml, {}), '<|im_start|>assistant\n');
  const inst = compileTemplate(
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}",
    'model',
  );
  assert.equal(turnHeaderText(inst, { bos_token: '<s>', eos_token: '</s>' }), '[INST] x [/INST]');
  assert.deepEqual(turnHeaderIds([7, 8, 9]), [[7]]);
  assert.deepEqual(turnHeaderIds([]), []);
});

test('loss.svg: two panels, labelled step ticks, the stop-rate curve', () => {
  const lines: MetricsLine[] = [1, 2, 3, 4].map((step) => ({
    step,
    loss: 3 - step / 2,
    lr: 1e-3,
    grad_norm: 1,
    tokens: 10,
    tokens_per_s: 100,
    epoch: 0,
  }));
  Object.assign(lines[1]!, { stop_rate: 0.25, mean_new_tokens: 10, runaway_new_turn: 0.5 });
  Object.assign(lines[3]!, { stop_rate: 1, mean_new_tokens: 3, runaway_new_turn: 0 });
  const svg = lossCurveSvg(lines);
  assert.equal((svg.match(/<polyline/g) ?? []).length, 2, 'loss and stop rate');
  assert.match(svg, /stop rate on held-out prompts/);
  assert.match(svg, />100%</);
  assert.deepEqual(stepTicks(4), [0, 1, 2, 3, 4]);
  assert.deepEqual(stepTicks(300), [0, 100, 200, 300]);
  assert.match(
    lossCurveSvg(
      lines.map(({ step, loss, lr, grad_norm, tokens, tokens_per_s, epoch }) => ({
        step,
        loss,
        lr,
        grad_norm,
        tokens,
        tokens_per_s,
        epoch,
      })),
    ),
    /not measured/,
  );
});
