import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatDuration, formatRate } from '../src/util/progress.js';

function fakeStream(isTTY: boolean, columns = 120): { isTTY: boolean; columns: number; out: string[]; write(s: string): boolean } {
  return {
    isTTY,
    columns,
    out: [] as string[],
    write(s: string) {
      this.out.push(s);
      return true;
    },
  };
}

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

test('formatDuration and formatRate', () => {
  assert.equal(formatDuration(0), '0:00');
  assert.equal(formatDuration(75), '1:15');
  assert.equal(formatDuration(3725), '1:02:05');
  assert.equal(formatRate(1234.4), '1234');
  assert.equal(formatRate(45.61), '45.6');
  assert.equal(formatRate(2.314), '2.31');
  assert.equal(formatRate(0.0123), '0.012');
});

test('non-TTY: plain lines every 10% of the total, no ANSI, no carriage returns', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ label: 'prepare', total: 100, unit: 'examples', stream, now: clock.now, env: {} });
  for (let i = 0; i < 100; i++) {
    clock.advance(10); // 1 s in all: the 5 s timer never fires
    p.tick();
  }
  p.done();
  const text = stream.out.join('');
  assert.ok(!/\x1b|\r/.test(text));
  const lines = text.trimEnd().split('\n');
  // 10%, 20%, ..., 100% while ticking, then the final line.
  assert.equal(lines.length, 11);
  assert.match(lines[0]!, /^prepare {2}10\/100 {2}10% {2}100 examples\/s {2}ETA 0:01 {2}0:00$/);
  assert.match(lines[4]!, /50\/100 {2}50%/);
  assert.match(lines[10]!, /^prepare {2}100\/100 {2}100% {2}100 examples\/s {2}done in 0:01$/);
});

test('non-TTY: a line every interval when progress is slow, with tokens/s and info', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ label: 'train', total: 1000, unit: 'steps', stream, now: clock.now, env: {}, intervalMs: 5000 });
  for (let i = 0; i < 8; i++) {
    clock.advance(2000);
    p.tick(1, { tokens: 500, info: `loss ${(3 - i * 0.1).toFixed(2)}` });
  }
  // Ticks at 2,4,6,...,16 s: lines at 6 s (first >= 5 s), 12 s (6 s after), and nothing at 8, 10, 14, 16.
  assert.equal(stream.out.length, 2);
  assert.match(stream.out[0]!, /^train {2}3\/1000 {2}0% {2}0\.50 steps\/s {2}250 tok\/s {2}ETA 33:14 {2}0:06 {2}loss 2\.80\n$/);
  assert.match(stream.out[1]!, /6\/1000 .*0:12 {2}loss 2\.50\n$/);
  p.done();
  assert.match(stream.out[2]!, /^train {2}8\/1000 .*done in 0:16 {2}loss 2\.30\n$/);
  p.done(); // idempotent
  p.tick();
  assert.equal(stream.out.length, 3);
});

test('unknown total: counts and rates, no percentage or ETA', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ label: 'scan', stream, now: clock.now, env: {} });
  clock.advance(6000);
  p.tick(12);
  assert.equal(stream.out[0], 'scan  12 it  2.00 it/s  0:06\n');
});

test('TTY: one line redrawn in place, throttled, final newline; ANSI clear unless NO_COLOR', () => {
  for (const env of [{}, { NO_COLOR: '1' }]) {
    const stream = fakeStream(true);
    const clock = fakeClock();
    const p = createProgress({ label: 'eval', total: 4, stream, now: clock.now, env, redrawMs: 100 });
    p.tick(); // drawn
    clock.advance(50);
    p.tick(); // throttled
    clock.advance(60);
    p.tick(); // drawn
    p.log('note: something happened');
    p.tick(); // throttled: the log's redraw was just now
    p.done();
    const text = stream.out.join('');
    const ansi = !('NO_COLOR' in env);
    assert.equal(/\x1b/.test(text), ansi, JSON.stringify(env));
    assert.ok(
      stream.out.every((s) => s.startsWith('\r') || s.startsWith('note')),
      JSON.stringify(stream.out),
    );
    assert.equal(text.split('\n').length - 1, 2); // the log line and the final line
    assert.match(text, /\[#{5}-{15}\]/); // 1/4 drawn bar
    assert.match(text, /\r\x1b\[Knote: something happened\n|\r +\rnote: something happened\n/);
    assert.match(stream.out[stream.out.length - 1]!, /eval {2}4\/4 {2}100% {2}\[#{20}\] .*done in 0:00.*\n$/);
    // Throttled ticks drew nothing: 1st draw, 3rd draw, log, redraw, final.
    assert.equal(stream.out.length, 5);
  }
});

test('TTY: lines are cut to the terminal width so the redraw never wraps', () => {
  const stream = fakeStream(true, 30);
  const p = createProgress({ label: 'a-very-long-label-for-a-command', total: 10, stream, now: fakeClock().now, env: { NO_COLOR: '1' } });
  p.tick();
  const line = stream.out[0]!.replace(/^\r/, '').trimEnd();
  assert.ok(line.length <= 29, `${line.length}`);
});

test('fractional counts (e.g. megabytes read) print with one decimal', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ label: 'prepare', total: 50.25, unit: 'MB', stream, now: clock.now, env: {} });
  clock.advance(2000);
  p.update(12.3456);
  assert.match(stream.out[0]!, /^prepare {2}12\.3\/50\.3 {2}24% {2}6\.17 MB\/s/);
});

test('silent writes nothing', () => {
  const stream = fakeStream(true);
  const p = createProgress({ label: 'x', total: 2, stream, env: {}, silent: true });
  p.tick();
  p.log('hidden');
  p.done();
  assert.deepEqual(stream.out, []);
});

test('status inside an item: plain output at most one line per interval, cleared by the next tick', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ label: 'train', total: 10, unit: 'steps', stream, now: clock.now, env: {}, intervalMs: 5000 });
  // 1000 layer ticks over 20 s: about 4 lines, not 1000.
  for (let i = 0; i < 1000; i++) {
    clock.advance(20);
    p.status(`step 1/10 · backward layer ${i}/1000`);
  }
  const lines = stream.out.join('').split('\n').filter(Boolean);
  assert.ok(lines.length >= 3 && lines.length <= 4, `${lines.length} lines`);
  assert.match(lines[0]!, /^train {2}0\/10 .*step 1\/10 · backward layer \d+\/1000$/);
  assert.ok(!stream.out.join('').includes('\r'));
  clock.advance(6000);
  p.tick(1, { info: 'loss 2.5' });
  const last = stream.out[stream.out.length - 1]!;
  assert.match(last, /loss 2\.5\n$/);
  assert.ok(!last.includes('layer'), 'the finished step drops its status');
});

test('status on a TTY: part of the redrawn bar, redraws throttled', () => {
  const stream = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ label: 'train', total: 10, unit: 'steps', stream, now: clock.now, env: {}, redrawMs: 100 });
  for (let i = 1; i <= 50; i++) {
    clock.advance(10);
    p.status(`step 1/10 · forward layer ${i}/50`);
  }
  assert.ok(stream.out.length >= 4 && stream.out.length <= 6, `${stream.out.length} redraws`);
  assert.match(stream.out[stream.out.length - 1]!, /^\r.*\[-{20}\].*step 1\/10 · forward layer \d+\/50/);
});
