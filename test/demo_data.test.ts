import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateDemoData, renderChatml, toJsonl, type DemoConversation } from '../src/demo/data.js';
import { ChatsftError } from '../src/errors.js';

const userMessages = (cs: DemoConversation[]): Set<string> =>
  new Set(cs.flatMap((c) => c.messages.filter((m) => m.role === 'user').map((m) => m.content)));

const both = (a: DemoConversation[], b: DemoConversation[]): DemoConversation[] => [...a, ...b];

const range = (a: number, b: number): string => Array.from({ length: Math.abs(b - a) + 1 }, (_, i) => (a <= b ? a + i : a - i)).join(' ');

/** Recomputes the answer from the question text alone. */
function expectedAnswer(user: string): string {
  let m: RegExpMatchArray | null;
  if ((m = user.match(/^Count from (\d+) to (\d+)\.$/))) return range(Number(m[1]), Number(m[2]));
  if ((m = user.match(/^Count down from (\d+) to (\d+)\.$/))) return range(Number(m[1]), Number(m[2]));
  if ((m = user.match(/^Spell (\w+) backwards\.$/))) return [...m[1]!].reverse().join(' ');
  if ((m = user.match(/^Spell (\w+)\.$/))) return [...m[1]!].join(' ');
  if ((m = user.match(/^Repeat (\w+) (\d+) times?\.$/))) return Array(Number(m[2])).fill(m[1]).join(' ');
  if ((m = user.match(/^Say (\w+) and (\w+) (\d+) times?\.$/))) return Array(Number(m[3])).fill(`${m[1]} ${m[2]}`).join(' ');
  throw new Error(`unknown question: ${user}`);
}

test('same seed gives the same data; another seed or task gives other data', () => {
  const a = generateDemoData({ seed: 1, train: 200, heldout: 40, task: 'A' });
  assert.deepEqual(generateDemoData({ seed: 1, train: 200, heldout: 40, task: 'A' }), a);
  assert.notDeepEqual(generateDemoData({ seed: 2, train: 200, heldout: 40, task: 'A' }), a);
  assert.equal(a.train.length, 200);
  assert.equal(a.heldout.length, 40);
});

for (const task of ['A', 'B'] as const) {
  test(`task ${task}: answers are exact, 1-25 words, and span short and long`, () => {
    const { train, heldout } = generateDemoData({ seed: 5, train: 600, heldout: 90, task });
    const lengths = new Set<number>();
    for (const c of [...train, ...heldout]) {
      const msgs = c.messages;
      assert.equal(msgs[msgs.length - 1]?.role, 'assistant');
      // Roles: optional system, then user/assistant pairs.
      const body = msgs[0]?.role === 'system' ? msgs.slice(1) : msgs;
      body.forEach((m, i) => assert.equal(m.role, i % 2 === 0 ? 'user' : 'assistant'));
      for (let i = 0; i < body.length; i += 2) {
        const answer = body[i + 1]!.content;
        assert.equal(answer, expectedAnswer(body[i]!.content));
        const words = answer.split(' ').length;
        assert.ok(words >= 1 && words <= 25, `${words} words`);
        lengths.add(words);
      }
    }
    // Length is spread out, so stopping cannot be a constant.
    assert.ok(lengths.has(1) || lengths.has(2));
    assert.ok([...lengths].some((n) => n >= 20));
    assert.ok(lengths.size >= 15, `only ${lengths.size} distinct lengths`);
    // A two-turn conversation never asks the same question twice.
    for (const c of both(train, heldout)) {
      const users = c.messages.filter((m) => m.role === 'user').map((m) => m.content);
      assert.equal(new Set(users).size, users.length);
    }
    // Some conversations have a system prompt, some two turns, some neither.
    const all = [...train, ...heldout];
    const sys = all.filter((c) => c.messages[0]?.role === 'system').length;
    const twoTurn = all.filter((c) => c.messages.filter((m) => m.role === 'user').length === 2).length;
    assert.ok(sys > all.length * 0.3 && sys < all.length * 0.7, `system prompts: ${sys}`);
    assert.ok(twoTurn > all.length * 0.1 && twoTurn < all.length * 0.4, `two-turn: ${twoTurn}`);
  });

  test(`task ${task}: held-out user messages never occur in train`, () => {
    const { train, heldout } = generateDemoData({ seed: 9, train: 2000, heldout: 150, task });
    const trainUsers = userMessages(train);
    for (const u of userMessages(heldout)) assert.ok(!trainUsers.has(u), `leaked: ${u}`);
    // Held-out final questions are distinct.
    const finals = heldout.map((c) => c.messages[c.messages.length - 2]!.content);
    assert.equal(new Set(finals).size, finals.length);
  });
}

test('task A and task B ask different questions', () => {
  const a = userMessages(generateDemoData({ seed: 3, train: 300, heldout: 0, task: 'A' }).train);
  const b = userMessages(generateDemoData({ seed: 3, train: 300, heldout: 0, task: 'B' }).train);
  for (const u of b) assert.ok(!a.has(u), u);
});

test('every task family appears in train', () => {
  const users = [...userMessages(generateDemoData({ seed: 4, train: 60, heldout: 10, task: 'A' }).train)];
  for (const re of [/^Count from/, /^Spell \w+\.$/, /^Repeat/])
    assert.ok(
      users.some((u) => re.test(u)),
      String(re),
    );
});

test('asking for more held-out prompts than reserved room is a usage error', () => {
  assert.throws(
    () => generateDemoData({ seed: 1, train: 10, heldout: 10_000, task: 'A' }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'USAGE',
  );
  assert.throws(() => generateDemoData({ seed: 1, train: -1, heldout: 1, task: 'A' }), ChatsftError);
});

test('renderChatml and toJsonl', () => {
  const c: DemoConversation = {
    messages: [
      { role: 'user', content: 'Spell cat.' },
      { role: 'assistant', content: 'c a t' },
    ],
  };
  assert.equal(renderChatml(c), '<|im_start|>user\nSpell cat.<|im_end|>\n<|im_start|>assistant\nc a t<|im_end|>\n');
  const lines = toJsonl([c, c]).split('\n');
  assert.equal(lines.length, 3);
  assert.deepEqual(JSON.parse(lines[0]!), c);
});
