import { test } from 'node:test';
import assert from 'node:assert/strict';
import { argmax, createRng, generate, noCacheStepModel, sampleToken, stopIdsFor, type StepModel } from '../src/generate/index.js';
import { ChatsftError } from '../src/errors.js';

const V = 12;

/**
 * Bigram toy: the logits of the next token depend only on the previous one.
 * The argmax after t is (3t + 1) mod V; the others get distinct lower values
 * so sampling has a real distribution to draw from.
 */
function bigramLogits(prev: number): Float32Array {
  const out = new Float32Array(V);
  const best = (3 * prev + 1) % V;
  for (let j = 0; j < V; j++) out[j] = j === best ? 2 : ((j * 7 + prev) % V) / V;
  return out;
}

/** A "KV-cache" style model: it keeps only per-row state and records calls. */
function bigramModel(log: { rows: number[][]; disposed: number }): StepModel {
  let last: number[] = [];
  const rowsLogits = (tokens: readonly number[]): Float32Array => {
    const out = new Float32Array(tokens.length * V);
    tokens.forEach((t, i) => out.set(bigramLogits(t), i * V));
    return out;
  };
  return {
    vocabSize: V,
    start(prompts) {
      last = prompts.map((p) => p[p.length - 1] as number);
      log.rows.push(prompts.map((_, b) => b));
      return rowsLogits(last);
    },
    step(rows, tokens) {
      log.rows.push([...rows]);
      rows.forEach((b, i) => (last[b] = tokens[i] as number));
      return rowsLogits(tokens);
    },
    dispose() {
      log.disposed++;
    },
  };
}

const freshLog = (): { rows: number[][]; disposed: number } => ({ rows: [], disposed: 0 });

test('greedy follows the argmax chain', async () => {
  const [r] = await generate(bigramModel(freshLog()), [[0]], { maxNewTokens: 5, stopIds: [] });
  // 0 -> 1 -> 4 -> 13%12=1 -> 4 -> 1
  assert.deepEqual(r, { tokens: [1, 4, 1, 4, 1], stoppedBy: null, hitMaxNewTokens: true });
});

test('a stop id ends the row, is not returned, and is recorded', async () => {
  // From 2: 2 -> 7 -> 22%12=10 -> 31%12=7 ...
  const [r] = await generate(bigramModel(freshLog()), [[2]], { maxNewTokens: 10, stopIds: [10] });
  assert.deepEqual(r, { tokens: [7], stoppedBy: 10, hitMaxNewTokens: false });
});

test('each stop-id source on its own stops generation', async () => {
  const cases = [{ eotIds: [10] }, { generationConfigEos: 10 }, { generationConfigEos: [3, 10] }, { tokenizerEos: 10 }];
  for (const sources of cases) {
    const [r] = await generate(bigramModel(freshLog()), [[2]], { maxNewTokens: 10, stopIds: stopIdsFor(sources) });
    assert.equal(r?.stoppedBy, 10, JSON.stringify(sources));
    assert.deepEqual(r?.tokens, [7]);
  }
  // Without any source naming 10, the same prompt runs to the limit.
  const [r] = await generate(bigramModel(freshLog()), [[2]], { maxNewTokens: 10, stopIds: stopIdsFor({ tokenizerEos: 11 }) });
  assert.equal(r?.stoppedBy, null);
  assert.equal(r?.hitMaxNewTokens, true);
  assert.equal(r?.tokens.length, 10);
});

test('stopIdsFor is the sorted union and rejects bad ids', () => {
  assert.deepEqual(stopIdsFor({ eotIds: [5], generationConfigEos: [2, 5], tokenizerEos: 9 }), [2, 5, 9]);
  assert.deepEqual(stopIdsFor({ eotIds: 4, generationConfigEos: undefined, tokenizerEos: null }), [4]);
  assert.deepEqual(stopIdsFor({}), []);
  assert.throws(
    () => stopIdsFor({ generationConfigEos: [1, -2] }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'MODEL_INVALID' && /\[1\]/.test(e.message),
  );
  assert.throws(() => stopIdsFor({ tokenizerEos: 1.5 }), ChatsftError);
});

test('finished rows cost no work and the model is disposed once', async () => {
  const log = freshLog();
  // Row 0 (prompt 2) stops after one token; row 1 (prompt 0) never sees 10.
  const results = await generate(bigramModel(log), [[2], [5, 0]], { maxNewTokens: 4, stopIds: [10] });
  assert.deepEqual(results[0], { tokens: [7], stoppedBy: 10, hitMaxNewTokens: false });
  assert.deepEqual(results[1], { tokens: [1, 4, 1, 4], stoppedBy: null, hitMaxNewTokens: true });
  // start both; step both once (row 0 fed 7), then only row 1; no step after the last token.
  assert.deepEqual(log.rows, [[0, 1], [0, 1], [1], [1]]);
  assert.equal(log.disposed, 1);
});

test('max_new_tokens 0 generates nothing and never calls the model', async () => {
  const log = freshLog();
  const [r] = await generate(bigramModel(log), [[1]], { maxNewTokens: 0, stopIds: [] });
  assert.deepEqual(r, { tokens: [], stoppedBy: null, hitMaxNewTokens: true });
  assert.deepEqual(log.rows, []);
});

test('top-k = 1 equals greedy, whatever the temperature and seed', async () => {
  const prompts = [[0], [2], [5], [9]];
  const greedy = await generate(bigramModel(freshLog()), prompts, { maxNewTokens: 8, stopIds: [10] });
  for (const seed of [1, 2, 99]) {
    const topk1 = await generate(bigramModel(freshLog()), prompts, { maxNewTokens: 8, stopIds: [10], temperature: 1.5, topK: 1, seed });
    assert.deepEqual(topk1, greedy);
  }
});

test('sampling is reproducible by seed and varies across seeds', async () => {
  const opts = { maxNewTokens: 20, stopIds: [] as number[], temperature: 1.0 };
  const a = await generate(bigramModel(freshLog()), [[0], [3]], { ...opts, seed: 7 });
  const b = await generate(bigramModel(freshLog()), [[0], [3]], { ...opts, seed: 7 });
  const c = await generate(bigramModel(freshLog()), [[0], [3]], { ...opts, seed: 8 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  // Sampling at T=1 on this table is not greedy.
  const g = await generate(bigramModel(freshLog()), [[0], [3]], { maxNewTokens: 20, stopIds: [] });
  assert.notDeepEqual(a, g);
});

test('batch generation equals one-by-one (greedy and per-row seeded sampling)', async () => {
  const prompts = [[0], [2, 2], [5], [9, 1, 3], [11]];
  for (const sampling of [{}, { temperature: 0.9, topP: 0.9 }]) {
    const seeds = [11, 22, 33, 44, 55];
    const batch = await generate(bigramModel(freshLog()), prompts, { maxNewTokens: 12, stopIds: [10, 6], ...sampling, seed: seeds });
    for (let b = 0; b < prompts.length; b++) {
      const [one] = await generate(bigramModel(freshLog()), [prompts[b] as number[]], {
        maxNewTokens: 12,
        stopIds: [10, 6],
        ...sampling,
        seed: [seeds[b] as number],
      });
      assert.deepEqual(one, batch[b], `row ${b} with ${JSON.stringify(sampling)}`);
    }
  }
});

test('a cached model and the no-cache reference agree on a history-dependent model', async () => {
  // Logits depend on the whole prefix: argmax = (sum of ids * 5 + length) mod V.
  const prefixLogits = (sum: number, len: number): Float32Array => {
    const out = new Float32Array(V);
    for (let j = 0; j < V; j++) out[j] = Math.cos(j * 1.3 + sum * 0.7 + len);
    out[(sum * 5 + len) % V] = 3;
    return out;
  };
  const reference = noCacheStepModel(V, (seqs) => {
    const out = new Float32Array(seqs.length * V);
    seqs.forEach((s, i) =>
      out.set(
        prefixLogits(
          s.reduce((x, y) => x + y, 0),
          s.length,
        ),
        i * V,
      ),
    );
    return out;
  });
  // Incremental version: keeps (sum, len) per row, like a KV cache keeps keys.
  let state: { sum: number; len: number }[] = [];
  const cached: StepModel = {
    vocabSize: V,
    start(prompts) {
      state = prompts.map((p) => ({ sum: p.reduce((x, y) => x + y, 0), len: p.length }));
      const out = new Float32Array(prompts.length * V);
      state.forEach((s, i) => out.set(prefixLogits(s.sum, s.len), i * V));
      return out;
    },
    step(rows, tokens) {
      const out = new Float32Array(rows.length * V);
      rows.forEach((b, i) => {
        const s = state[b]!;
        s.sum += tokens[i]!;
        s.len += 1;
        out.set(prefixLogits(s.sum, s.len), i * V);
      });
      return out;
    },
    dispose() {},
  };
  const prompts = [[1, 2, 3], [4], [7, 7], [0, 11, 5, 6]];
  for (const opts of [{}, { temperature: 0.8, topK: 4, seed: 3 }]) {
    const a = await generate(reference, prompts, { maxNewTokens: 15, stopIds: [0], ...opts });
    const b = await generate(cached, prompts, { maxNewTokens: 15, stopIds: [0], ...opts });
    assert.deepEqual(b, a);
  }
});

test('streaming callback sees every kept token in order, never the stop id', async () => {
  const events: string[] = [];
  const results = await generate(bigramModel(freshLog()), [[2], [0]], {
    maxNewTokens: 3,
    stopIds: [10],
    onToken: (e) => events.push(`${e.row}:${e.index}:${e.token}`),
  });
  assert.deepEqual(events, ['0:0:7', '1:0:1', '1:1:4', '1:2:1']);
  assert.deepEqual(
    results.map((r) => r.tokens),
    [[7], [1, 4, 1]],
  );
});

test('bad inputs and bad model outputs raise ChatsftError; the model is still disposed', async () => {
  const log = freshLog();
  await assert.rejects(
    generate(bigramModel(log), [[V]], { maxNewTokens: 2, stopIds: [] }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'USAGE' && /prompts\[0\]\[0\]/.test(e.message),
  );
  await assert.rejects(generate(bigramModel(log), [[]], { maxNewTokens: 2, stopIds: [] }), ChatsftError);
  await assert.rejects(generate(bigramModel(log), [[1]], { maxNewTokens: 2, stopIds: [], topP: 0 }), ChatsftError);
  await assert.rejects(generate(bigramModel(log), [[1]], { maxNewTokens: -1, stopIds: [] }), ChatsftError);
  assert.equal(log.disposed, 4);
  const short = noCacheStepModel(V, () => new Float32Array(V - 1));
  await assert.rejects(
    generate(short, [[1]], { maxNewTokens: 2, stopIds: [] }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'ENGINE_ERROR',
  );
  const nan = noCacheStepModel(V, () => new Float32Array(V).fill(NaN));
  await assert.rejects(
    generate(nan, [[1]], { maxNewTokens: 2, stopIds: [] }),
    (e: unknown) => e instanceof ChatsftError && e.code === 'ENGINE_ERROR',
  );
});

test('argmax ignores NaN and breaks ties by lowest index', () => {
  assert.equal(argmax([NaN, 1, 3, 3, -Infinity]), 2);
  assert.equal(argmax([-Infinity, -5]), 1);
});

test('sampling frequencies follow softmax; top-k and top-p cut the tail', () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  const rng = createRng(123);
  const N = 20000;
  const count = (p: { temperature: number; topK: number; topP: number }): number[] => {
    const c = [0, 0, 0, 0];
    for (let i = 0; i < N; i++) c[sampleToken(logits, p, rng.next())]!++;
    return c.map((x) => x / N);
  };
  const full = count({ temperature: 1, topK: 0, topP: 1 });
  [0.5, 0.3, 0.15, 0.05].forEach((p, i) => assert.ok(Math.abs(full[i]! - p) < 0.02, `p[${i}] = ${full[i]}`));
  const k2 = count({ temperature: 1, topK: 2, topP: 1 });
  assert.equal(k2[2]! + k2[3]!, 0);
  assert.ok(Math.abs(k2[0]! - 0.625) < 0.02);
  // Nucleus 0.8 = {0.5, 0.3}: the smallest prefix reaching 0.8.
  const p8 = count({ temperature: 1, topK: 0, topP: 0.8 });
  assert.equal(p8[2]! + p8[3]!, 0);
  assert.ok(p8[1]! > 0.3);
  // Low temperature concentrates mass on the argmax.
  const cold = count({ temperature: 0.1, topK: 0, topP: 1 });
  assert.ok(cold[0]! > 0.99);
});
