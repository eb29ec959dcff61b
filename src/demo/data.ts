/**
 * The demo's bundled dataset: ChatML-style conversations whose answer length
 * is set by the prompt ("Count from 3 to 9." -> "3 4 5 6 7 8 9"), so a model
 * can only stop at the right place by learning where the answer ends. The
 * vocabulary is small and closed (numbers 0-30, a few dozen words) so a tiny
 * model learns it in minutes on a CPU.
 *
 * Task A is the main demo; task B is a different task over the same words,
 * used to continue training a model in the "forgetting" experiment.
 *
 * Held-out prompts are reserved before any training conversation is drawn:
 * no user message of a held-out conversation occurs in the training split.
 */
import { ChatsftError } from '../errors.js';
import { createRng, type Rng } from '../generate/index.js';

export type DemoRole = 'system' | 'user' | 'assistant';
export interface DemoMessage {
  role: DemoRole;
  content: string;
}
/** Same shape as a line of the messages JSONL format (SPEC §3). */
export interface DemoConversation {
  messages: DemoMessage[];
}

export type DemoTask = 'A' | 'B';

export interface DemoDataOptions {
  seed: number;
  train: number;
  heldout: number;
  task: DemoTask;
}

/** One question and its exact answer. */
interface Item {
  user: string;
  answer: string;
}

const SPELL_WORDS = [
  'cat',
  'dog',
  'sun',
  'red',
  'blue',
  'tree',
  'fish',
  'bird',
  'milk',
  'book',
  'star',
  'moon',
  'rain',
  'snow',
  'frog',
  'cake',
  'lamp',
  'ship',
  'door',
  'road',
  'green',
  'apple',
  'house',
  'water',
  'light',
  'train',
  'chair',
  'plant',
  'river',
  'cloud',
  'bread',
  'stone',
  'music',
  'table',
  'garden',
  'yellow',
  'orange',
  'purple',
  'window',
  'pencil',
];
const SAY_WORDS = ['ok', 'yes', 'no', 'hi', 'go', 'up', 'la', 'hey', 'bye', 'wow'];
const SYSTEM_PROMPTS = ['You are a helpful assistant.', 'Answer with the list only.', 'Be brief.'];
const MAX_NUMBER = 30;
const MAX_ANSWER_WORDS = 25;

const range = (from: number, to: number): number[] =>
  from <= to ? Array.from({ length: to - from + 1 }, (_, i) => from + i) : Array.from({ length: from - to + 1 }, (_, i) => from - i);

const times = (n: number): string => (n === 1 ? 'time' : 'times');

/** Task families as lists of every possible item; answers are 1-25 words. */
function familiesFor(task: DemoTask): Item[][] {
  const counts: Item[] = [];
  for (let a = 0; a <= 20; a++) {
    for (let b = a; b <= Math.min(MAX_NUMBER, a + MAX_ANSWER_WORDS - 1); b++) {
      counts.push(
        task === 'A'
          ? { user: `Count from ${a} to ${b}.`, answer: range(a, b).join(' ') }
          : { user: `Count down from ${b} to ${a}.`, answer: range(b, a).join(' ') },
      );
    }
  }
  const spell = SPELL_WORDS.map((w): Item =>
    task === 'A'
      ? { user: `Spell ${w}.`, answer: [...w].join(' ') }
      : { user: `Spell ${w} backwards.`, answer: [...w].reverse().join(' ') },
  );
  const say: Item[] = [];
  if (task === 'A') {
    for (const w of SAY_WORDS) {
      for (let n = 1; n <= 20; n++) say.push({ user: `Repeat ${w} ${n} ${times(n)}.`, answer: Array<string>(n).fill(w).join(' ') });
    }
  } else {
    for (const w1 of SAY_WORDS) {
      for (const w2 of SAY_WORDS) {
        if (w1 === w2) continue;
        for (let n = 1; n <= 10; n++) {
          say.push({ user: `Say ${w1} and ${w2} ${n} ${times(n)}.`, answer: Array<string>(n).fill(`${w1} ${w2}`).join(' ') });
        }
      }
    }
  }
  return [counts, spell, say];
}

/** Largest share of a family that may be reserved for held-out prompts. */
const HELDOUT_SHARE = 1 / 3;

function conversation(rng: Rng, final: Item, pool: readonly Item[]): DemoConversation {
  const messages: DemoMessage[] = [];
  // Half the conversations have a system prompt, a quarter have two turns.
  if (rng.next() < 0.5) messages.push({ role: 'system', content: rng.pick(SYSTEM_PROMPTS) });
  if (rng.next() < 0.25) {
    // Another question of the same split; retry once if we drew the final one.
    let first = rng.pick(pool);
    if (first === final && pool.length > 1) first = rng.pick(pool.filter((x) => x !== final));
    messages.push({ role: 'user', content: first.user }, { role: 'assistant', content: first.answer });
  }
  messages.push({ role: 'user', content: final.user }, { role: 'assistant', content: final.answer });
  return { messages };
}

function checkCount(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new ChatsftError('USAGE', `${name} must be an integer >= 0, got ${n}`);
}

/**
 * Deterministic in `seed`: the same options always give the same
 * conversations. Held-out conversations use only reserved prompts (also for
 * their first turn), so train and held-out share no user message.
 */
export function generateDemoData(options: DemoDataOptions): { train: DemoConversation[]; heldout: DemoConversation[] } {
  checkCount('train', options.train);
  checkCount('heldout', options.heldout);
  const rng = createRng(options.seed, options.task === 'A' ? 0xa : 0xb);
  const families = familiesFor(options.task).map((f) => rng.shuffle(f));

  // Spread the held-out prompts over the families round-robin.
  const quotas = families.map((f) => Math.floor(f.length * HELDOUT_SHARE));
  const capacity = quotas.reduce((a, b) => a + b, 0);
  if (options.heldout > capacity) {
    throw new ChatsftError('USAGE', `task ${options.task} has room for at most ${capacity} held-out prompts, asked for ${options.heldout}`);
  }
  const reserved = families.map(() => 0);
  for (let i = 0, f = 0; i < options.heldout; f = (f + 1) % families.length) {
    if ((reserved[f] as number) < (quotas[f] as number)) {
      reserved[f] = (reserved[f] as number) + 1;
      i++;
    }
  }
  const heldoutPools = families.map((f, i) => f.slice(0, reserved[i]));
  const trainPools = families.map((f, i) => f.slice(reserved[i]));
  const heldoutAll = heldoutPools.flat();
  const trainAll = trainPools.flat();

  const heldout = rng.shuffle(heldoutAll).map((item) => conversation(rng, item, heldoutAll));
  const train: DemoConversation[] = [];
  for (let i = 0; i < options.train; i++) {
    // Family first, then an item, so the small spelling family is not drowned by counting.
    const family = trainPools[i % trainPools.length] as Item[];
    train.push(conversation(rng, rng.pick(family), trainAll));
  }
  return { train: rng.shuffle(train), heldout };
}

/** ChatML rendering of a whole conversation, as the built-in template writes it. */
export function renderChatml(conversation: DemoConversation): string {
  return conversation.messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
}

/** One JSON line per conversation (the messages format of SPEC §3). */
export function toJsonl(conversations: readonly DemoConversation[]): string {
  return conversations.map((c) => JSON.stringify(c) + '\n').join('');
}
