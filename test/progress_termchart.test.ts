import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineChart, resample } from '../src/util/termchart.js';

test('a small series renders exactly (golden)', () => {
  assert.deepEqual(lineChart([1, 3, 2, 5, 4], { height: 5, title: 'loss' }), [
    'loss',
    '5 ┤   ╭╮',
    '4 ┤   │╰',
    '3 ┤ ╭╮│',
    '2 ┤ │╰╯',
    '1 ┤─╯',
    '  └─────',
    '   1   5',
  ]);
});

test('ascii mode uses only ASCII characters', () => {
  const lines = lineChart([1, 3, 2, 5, 4], { height: 5, ascii: true });
  assert.ok(
    lines.every((l) => /^[\x20-\x7e]*$/.test(l)),
    lines.join('\n'),
  );
  assert.equal(lines[4], '1 |-/');
});

test('a decreasing loss curve: top-left to bottom-right, width capped, x labels are steps', () => {
  const loss = Array.from({ length: 500 }, (_, i) => 0.5 + 3 * Math.exp(-i / 80));
  const lines = lineChart(loss, { height: 8, width: 40, xStart: 1, xEnd: 500 });
  assert.equal(lines.length, 8 + 2);
  const plot = lines.slice(0, 8).map((l) => l.slice(l.indexOf('┤') + 1));
  assert.ok(plot.every((row) => row.length <= 40));
  // The first column is drawn in the top row, the last in the bottom row.
  assert.notEqual(plot[0]![0], ' ');
  assert.equal(plot[7]!.length, 40);
  // Axis labels span the resampled (column-mean) range.
  const columns = resample(loss, 40);
  const label = (v: number): string => String(Number(v.toPrecision(3)));
  assert.equal(lines[0]!.trim().split(' ')[0], label(columns[0]!));
  assert.equal(lines[7]!.trim().split(' ')[0], label(columns[39]!));
  assert.match(lines[9]!, /1 +500$/);
  // Every plotted row lies at or below the one of the previous column (monotone decrease).
  const rowOfCol = (c: number): number => plot.findIndex((row) => row[c] === '─' || row[c] === '╰');
  for (let c = 1; c < 40; c++) assert.ok(rowOfCol(c) >= rowOfCol(c - 1), `column ${c}`);
});

test('resample averages slices and skips non-finite values', () => {
  assert.deepEqual(resample([1, 3, 5, 7], 2), [2, 6]);
  assert.deepEqual(resample([1, NaN, 5, 7], 2), [1, 6]);
  assert.deepEqual(resample([1, 2], 5), [1, 2]);
});

test('gaps, flat series and empty input', () => {
  const gap = lineChart([1, NaN, 2], { height: 2 });
  assert.equal(gap[0], '2 ┤  ─');
  assert.equal(gap[1], '1 ┤─');
  const flat = lineChart([2, 2, 2], { height: 3 });
  assert.equal(flat[1], '  2 ┤───');
  assert.deepEqual(lineChart([], { title: 't' }), ['t', '(no data)']);
  assert.deepEqual(lineChart([NaN, Infinity]), ['(no data)']);
});
