import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyEnding, containsSequence, percentile, stopRateMetrics, type GenerationOutcome } from '../src/eval/metrics.js';
import { ChatsftError } from '../src/errors.js';

const IM_START = 50;
const USER = [60, 61];
const headers = [[IM_START], USER];

const stopped = (n: number, by = 9, ref?: number): GenerationOutcome => ({
  tokens: Array.from({ length: n }, (_, i) => i + 1),
  stoppedBy: by,
  hitMaxNewTokens: false,
  ...(ref === undefined ? {} : { referenceTokens: ref }),
});

test('containsSequence finds contiguous runs only', () => {
  assert.equal(containsSequence([1, 60, 61, 2], [60, 61]), true);
  assert.equal(containsSequence([1, 60, 2, 61], [60, 61]), false);
  assert.equal(containsSequence([60], [60, 61]), false);
  assert.equal(containsSequence([1, 2], []), false);
  assert.equal(containsSequence([7, 8, 60, 61], [60, 61]), true); // at the very end
});

test('classifyEnding tells stopped, new-turn runaways, text runaways and other endings apart', () => {
  assert.equal(classifyEnding(stopped(3), headers), 'stopped');
  assert.equal(classifyEnding({ tokens: [1, 2, IM_START, 4], stoppedBy: null, hitMaxNewTokens: true }, headers), 'runaway_new_turn');
  assert.equal(classifyEnding({ tokens: [1, 60, 61, 4], stoppedBy: null, hitMaxNewTokens: true }, headers), 'runaway_new_turn');
  assert.equal(classifyEnding({ tokens: [1, 60, 4, 61], stoppedBy: null, hitMaxNewTokens: true }, headers), 'runaway_text');
  assert.equal(classifyEnding({ tokens: [1, 2], stoppedBy: null, hitMaxNewTokens: false }, headers), 'ended_other');
  // A stopped generation that also wrote a header is still a stop.
  assert.equal(classifyEnding({ tokens: [IM_START], stoppedBy: 9, hitMaxNewTokens: false }, headers), 'stopped');
});

test('percentile uses nearest rank', () => {
  const xs = Array.from({ length: 20 }, (_, i) => 20 - i); // 20..1, unsorted order
  assert.equal(percentile(xs, 0.95), 19);
  assert.equal(percentile(xs, 1), 20);
  assert.equal(percentile([4], 0.95), 4);
  assert.equal(
    percentile(
      Array.from({ length: 100 }, (_, i) => i + 1),
      0.95,
    ),
    95,
  );
});

test('stopRateMetrics on a mixed set', () => {
  const outcomes: GenerationOutcome[] = [
    stopped(2, 9, 2),
    stopped(4, 9, 5),
    stopped(6, 7, 5),
    { tokens: [1, 2, 3, IM_START, 60, 61, 5, 6], stoppedBy: null, hitMaxNewTokens: true, referenceTokens: 3 },
    { tokens: [1, 1, 1, 1, 1, 1, 1, 1], stoppedBy: null, hitMaxNewTokens: true },
  ];
  const m = stopRateMetrics(outcomes, { maxNewTokens: 8, turnHeaders: headers });
  assert.deepEqual(m, {
    examples: 5,
    max_new_tokens: 8,
    stopped: 3,
    stop_rate: 0.6,
    mean_new_tokens: (2 + 4 + 6 + 8 + 8) / 5,
    p95_new_tokens: 8,
    reference_mean_tokens: (2 + 5 + 5 + 3) / 4,
    runaways: { total: 2, new_turn_header: 1, inside_text: 1 },
    ended_other: 0,
    stopped_by: { '9': 2, '7': 1 },
  });
  // The result is plain JSON (what `eval --json` prints).
  assert.deepEqual(JSON.parse(JSON.stringify(m)), m);
});

test('all stop / none stop extremes, and no reference lengths', () => {
  const all = stopRateMetrics([stopped(1), stopped(3)], { maxNewTokens: 4, turnHeaders: headers });
  assert.equal(all.stop_rate, 1);
  assert.equal(all.reference_mean_tokens, null);
  assert.equal(all.runaways.total, 0);
  const none = stopRateMetrics([{ tokens: [1, 2, 3, 4], stoppedBy: null, hitMaxNewTokens: true }], { maxNewTokens: 4, turnHeaders: [] });
  assert.equal(none.stop_rate, 0);
  assert.deepEqual(none.runaways, { total: 1, new_turn_header: 0, inside_text: 1 });
});

test('an empty evaluation set is a user-facing error', () => {
  assert.throws(
    () => stopRateMetrics([], { maxNewTokens: 4, turnHeaders: headers }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'DATA_INVALID',
  );
});
