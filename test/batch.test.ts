/**
 * Table-driven edges of padding and packing: equal lengths, unequal,
 * exactly max_length, one over, an empty assistant turn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collate, countTargets, hfLmCollatorLabels } from '../src/batch/collate.js';
import { packExamples } from '../src/batch/pack.js';
import type { Example, Row } from '../src/batch/types.js';

const PAD = 0;
const EOS = 2;

/** A fake example: prompt tokens (masked) then answer tokens + EOS (supervised). */
function ex(prompt: number, answer: number, source: number): Example {
  const inputIds: number[] = [1];
  const labels: number[] = [-100];
  for (let i = 0; i < prompt; i++) (inputIds.push(10 + i), labels.push(-100));
  for (let i = 0; i < answer; i++) (inputIds.push(100 + i), labels.push(100 + i));
  (inputIds.push(EOS), labels.push(EOS));
  return { inputIds, labels, source };
}

const rowOf = (e: Example): Row => ({ inputIds: e.inputIds, labels: e.labels, source: e.source });

const PAD_CASES: Array<{ name: string; lengths: Array<[number, number]> }> = [
  {
    name: 'equal lengths',
    lengths: [
      [3, 2],
      [3, 2],
    ],
  },
  {
    name: 'unequal lengths',
    lengths: [
      [1, 1],
      [5, 4],
      [2, 0],
    ],
  },
  {
    name: 'empty assistant turn',
    lengths: [
      [4, 0],
      [2, 3],
    ],
  },
  { name: 'single row', lengths: [[2, 2]] },
];

for (const c of PAD_CASES) {
  test(`collate, ${c.name}: left and right padding give the same labels, masks and positions`, () => {
    const rows = c.lengths.map(([p, a], i) => rowOf(ex(p, a, i + 1)));
    const longest = Math.max(...rows.map((r) => r.inputIds.length));
    for (const padId of [PAD, EOS]) {
      const right = collate(rows, { padId, paddingSide: 'right' });
      const left = collate(rows, { padId, paddingSide: 'left' });
      assert.equal(right.seqLen, longest);
      rows.forEach((row, b) => {
        const n = row.inputIds.length;
        const T = right.seqLen;
        const r = (a: ArrayLike<number>, from: number): number[] => Array.from(a).slice(b * T + from, b * T + from + n);
        assert.deepEqual(r(right.inputIds, 0), row.inputIds);
        assert.deepEqual(r(left.inputIds, T - n), row.inputIds);
        assert.deepEqual(r(right.labels, 0), r(left.labels, T - n));
        assert.deepEqual(r(right.labels, 0).slice(1), row.labels.slice(1));
        assert.deepEqual(r(right.positionIds, 0), r(left.positionIds, T - n));
        assert.deepEqual(
          r(left.positionIds, T - n),
          Array.from({ length: n }, (_, i) => i),
        );
        // Padding: masked, not attended, segment 0, label -100, whatever the pad id.
        for (let t = 0; t < T; t++) {
          const isPadRight = t >= n;
          assert.equal(right.attentionMask[b * T + t], isPadRight ? 0 : 1);
          if (isPadRight) assert.equal(right.labels[b * T + t], -100);
          const isPadLeft = t < T - n;
          assert.equal(left.segmentIds[b * T + t], isPadLeft ? 0 : 1);
        }
      });
      // Every EOS stays a target even when the pad id is the EOS id.
      const eosTargets = Array.from(left.labels).filter((l) => l === EOS).length;
      assert.equal(eosTargets, rows.length);
      assert.equal(countTargets(left), countTargets(right));
    }
  });
}

test('the legacy LM collator with pad = eos erases every EOS label, with either padding side', () => {
  const rows = PAD_CASES[1]!.lengths.map(([p, a], i) => rowOf(ex(p, a, i + 1)));
  for (const side of ['left', 'right'] as const) {
    const batch = collate(rows, { padId: EOS, paddingSide: side });
    for (const base of ['input_ids', 'labels'] as const) {
      const labels = hfLmCollatorLabels(batch, EOS, base);
      assert.equal(Array.from(labels).filter((l) => l === EOS).length, 0);
    }
    // With a distinct pad it keeps them.
    const ok = hfLmCollatorLabels(collate(rows, { padId: PAD, paddingSide: side }), PAD, 'labels');
    assert.equal(Array.from(ok).filter((l) => l === EOS).length, rows.length);
  }
});

test('collate pads to a requested multiple and rejects a too-short seqLen', () => {
  const rows = [rowOf(ex(2, 3, 1))]; // 7 tokens
  assert.equal(collate(rows, { padId: PAD, paddingSide: 'right', padToMultipleOf: 8 }).seqLen, 8);
  assert.throws(() => collate(rows, { padId: PAD, paddingSide: 'right', seqLen: 6 }), RangeError);
});

const PACK_CASES: Array<{ name: string; lengths: number[]; maxLength: number; rows: number }> = [
  { name: 'equal lengths fill rows exactly', lengths: [4, 4, 4, 4], maxLength: 8, rows: 2 },
  { name: 'exactly max_length is its own row', lengths: [8, 3, 5], maxLength: 8, rows: 2 },
  { name: 'best fit: small items fill gaps of big ones', lengths: [6, 5, 3, 2], maxLength: 8, rows: 2 },
  { name: 'unequal lengths', lengths: [7, 6, 2, 5, 3], maxLength: 8, rows: 3 },
  { name: 'one token examples', lengths: [3, 3, 3], maxLength: 3, rows: 3 },
];

function exOfLength(n: number, source: number): Example {
  // n >= 3: BOS, (n - 3) prompt tokens... keep an EOS at the end.
  return ex(Math.max(0, n - 3), n >= 3 ? 1 : 0, source);
}

for (const c of PACK_CASES) {
  test(`packing, ${c.name}`, () => {
    const examples = c.lengths.map((n, i) => {
      const e = exOfLength(n, i + 1);
      assert.equal(e.inputIds.length, Math.max(n, 2 + (n >= 3 ? 1 : 0)));
      return e;
    });
    const rows = packExamples(examples, c.maxLength);
    assert.equal(rows.length, c.rows);
    const seen: number[] = [];
    for (const row of rows) {
      assert.ok(row.inputIds.length <= c.maxLength);
      const lens = row.seqLengths ?? [];
      assert.equal(
        lens.reduce((a, b) => a + b, 0),
        row.inputIds.length,
      );
      let at = 0;
      lens.forEach((len, k) => {
        const src = (row.sources ?? [])[k] as number;
        seen.push(src);
        const e = examples[src - 1] as Example;
        assert.deepEqual(row.inputIds.slice(at, at + len), e.inputIds);
        assert.deepEqual(
          row.positionIds?.slice(at, at + len),
          Array.from({ length: len }, (_, i) => i),
        );
        assert.equal(row.labels[at], -100, 'no target at an example start');
        assert.deepEqual(row.labels.slice(at + 1, at + len), e.labels.slice(1));
        at += len;
      });
    }
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      examples.map((_, i) => i + 1),
    );
  });
}

test('packing rejects an example one over max_length', () => {
  assert.throws(() => packExamples([exOfLength(9, 1)], 8), RangeError);
});

test('a packed row collates into one segment per example: attention cannot cross them', () => {
  const rows = packExamples([ex(1, 2, 1), ex(2, 1, 2)], 16);
  assert.equal(rows.length, 1);
  const b = collate(rows, { padId: PAD, paddingSide: 'right', seqLen: 16 });
  const lens = rows[0]!.seqLengths!;
  const expected = [...Array(lens[0]).fill(1), ...Array(lens[1]).fill(2), ...Array(16 - lens[0]! - lens[1]!).fill(0)];
  assert.deepEqual(Array.from(b.segmentIds), expected);
  assert.equal(countTargets(b), 2 + 1 + 1 + 1); // both answers and both EOS
});
