/**
 * Property tests of the label invariants (SPEC §4) over generated
 * conversations, with every fixture tokenizer: random lengths, unicode,
 * whitespace, empty assistant turns and `train` flags. Invariant 4 is
 * checked by decoding, independently of the offsets the labeller used.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALL_FIXTURES, buildFixture, type FixtureName } from './helpers/fixtures.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer, type TrainOn } from '../src/tokenize/setup.js';
import { createEncoder, type EncodedExample } from '../src/labels/encode.js';
import { collate, hfLmCollatorLabels } from '../src/batch/collate.js';
import type { Conversation, Message } from '../src/data/conversations.js';
import { mulberry32 as rng } from './helpers/random.js';

const PIECES = [
  'hello',
  'héllo wörld',
  '日本語のテキスト',
  'emoji 👋🏽 ok',
  'tab\there',
  'two\nlines',
  '  padded  ',
  'a[b]c',
  '<not a token>',
  '42',
  'x',
  'Ünïcødé',
  '...',
];

function content(r: () => number, allowEmpty: boolean): string {
  if (allowEmpty && r() < 0.15) return '';
  const n = 1 + Math.floor(r() * 4);
  let s = '';
  for (let i = 0; i < n; i++) s += (i ? (r() < 0.8 ? ' ' : '\n') : '') + PIECES[Math.floor(r() * PIECES.length)];
  if (r() < 0.2) s = ' ' + s;
  if (r() < 0.2) s += r() < 0.5 ? ' ' : '\n';
  return s;
}

function conversation(r: () => number): Conversation {
  const messages: Message[] = [];
  if (r() < 0.5) messages.push({ role: 'system', content: content(r, false) });
  const pairs = 1 + Math.floor(r() * 3);
  for (let p = 0; p < pairs; p++) {
    messages.push({ role: 'user', content: content(r, false) });
    const m: Message = { role: 'assistant', content: content(r, true) };
    if (r() < 0.2) m.train = r() < 0.5;
    messages.push(m);
  }
  return { messages };
}

/**
 * What each template prints for an assistant turn before its EOT (Llama 3
 * and Gemma trim it; Qwen3 opens the final turn with an empty <think>
 * scaffold and strips leading newlines of its content).
 */
function rendered(name: FixtureName, c: string, final: boolean): string {
  if (name === 'qwen3' && final) return '<think>\n\n</think>\n\n' + c.replace(/^\n+/, '');
  return name === 'llama3' || name === 'gemma3' ? c.trim() : c;
}

async function decodeRange(
  tok: { decode(ids: number[], skip: boolean): Promise<string> },
  ids: number[],
  a: number,
  b: number,
): Promise<string> {
  // Decode with the preceding tokens and take the difference, so decoders
  // that strip a leading space at the start of a sequence do not interfere.
  const full = await tok.decode(ids.slice(0, b), false);
  const pre = await tok.decode(ids.slice(0, a), false);
  assert.ok(full.startsWith(pre), 'prefix decoding is stable');
  return full.slice(pre.length);
}

for (const name of ALL_FIXTURES) {
  test(`label invariants hold on generated conversations: ${name}`, async () => {
    const setup = setupTokenizer(loadModelFolder(buildFixture(name)));
    const r = rng(name.length * 7919);
    const eotToken = setup.eosToken as string;
    const eotId = setup.tokenizer.tokenToId(eotToken);
    for (const trainOn of ['assistant', 'last'] as TrainOn[]) {
      const convs = Array.from({ length: 40 }, () => conversation(r));
      const results = await createEncoder(setup, { trainOn }).encode(convs.map((conversation, i) => ({ conversation, line: i + 1 })));
      const kept: EncodedExample[] = [];
      for (const [i, res] of results.entries()) {
        const conv = convs[i] as Conversation;
        if (!res.ok) {
          // Only conversations with nothing to train may be dropped.
          assert.equal(res.reason, 'no_supervised_tokens', `line ${i + 1}: ${res.detail} ${JSON.stringify(conv)}`);
          continue;
        }
        kept.push(res);
        const { inputIds: ids, labels } = res.example;
        const assistants = conv.messages.map((m, j) => [m, j] as const).filter(([m]) => m.role === 'assistant');
        assert.equal(res.example.turns.length, assistants.length);
        const lastIndex = assistants[assistants.length - 1]?.[1];
        const inTurn = new Set<number>();
        for (const turn of res.example.turns) {
          const msg = conv.messages[turn.messageIndex] as Message;
          const expectTrained = msg.train ?? (trainOn === 'assistant' || turn.messageIndex === lastIndex);
          assert.equal(turn.trained, expectTrained, `line ${i + 1} message ${turn.messageIndex} trained flag`);
          assert.equal(turn.eotId, eotId, 'the turn closes with the EOT');
          if (!turn.trained) {
            for (let k = turn.start; k <= turn.eot; k++) assert.equal(labels[k], -100);
            continue;
          }
          // 1. The EOT is supervised.
          assert.equal(labels[turn.eot], ids[turn.eot], `line ${i + 1}: EOT supervised`);
          for (let k = turn.start; k <= turn.eot; k++) inTurn.add(k);
          // 4. Supervised ids of the turn decode to its rendered content + EOT.
          const text = await decodeRange(setup.tokenizer, ids, turn.start, turn.eot + 1);
          assert.equal(
            text,
            rendered(name, msg.content ?? '', turn.messageIndex === conv.messages.length - 1) + eotToken,
            `line ${i + 1} message ${turn.messageIndex}`,
          );
        }
        // 2. Nothing outside a trained turn's content + EOT is supervised.
        labels.forEach((l, k) => {
          if (l !== -100) {
            assert.ok(inTurn.has(k), `line ${i + 1}: position ${k} supervised outside a turn`);
            assert.equal(l, ids[k]);
          }
        });
      }
      assert.ok(kept.length >= 30, 'most generated conversations are kept');

      // 3. Labels do not depend on the pad id or side: pad = EOS on the left
      // gives the same labels as a distinct pad on the right.
      const rows = kept.map((k) => ({ inputIds: k.example.inputIds, labels: k.example.labels }));
      const left = collate(rows, { padId: setup.eosId as number, paddingSide: 'left' });
      const right = collate(rows, { padId: setup.padId, paddingSide: 'right' });
      let supervisedEot = 0;
      rows.forEach((row, b) => {
        const n = row.inputIds.length;
        const l = Array.from(left.labels.subarray(b * left.seqLen + left.seqLen - n, (b + 1) * left.seqLen));
        const rr = Array.from(right.labels.subarray(b * right.seqLen, b * right.seqLen + n));
        assert.deepEqual(l, rr);
        assert.deepEqual(l.slice(1), row.labels.slice(1));
        supervisedEot += l.filter((x) => x === eotId).length;
      });
      assert.ok(supervisedEot > 0);
      // The legacy collator erases every one of them: the failure chatsft avoids.
      const legacy = hfLmCollatorLabels(left, setup.eosId as number, 'labels');
      assert.equal(legacy.filter((x) => x === eotId).length, 0);
    }
  });
}
