/**
 * Greedy generation speed of the embedded engine (KV cache), random weights.
 *
 *   node dist/bench/generate.js [--prompt-tokens 64] [--new-tokens 64] [--repeats 3] [--only demo|20m]
 *
 * For the demo's model and a ~20 M-parameter Llama (the engine benchmark's
 * config): time to first token (prefill + first pick, batch 1) and
 * generated tokens/s at batch 1 and batch 16 (no stop ids, so every row
 * produces exactly --new-tokens). Median of --repeats runs after a warm-up.
 */
import { countParameters, createModel, disposeModel, initEngine, makeLlamaConfig, Rng, tf, type LlamaModel } from '../src/engine/index.js';
import { engineStepModel, generate } from '../src/generate/index.js';

const args = process.argv.slice(2);
const num = (n: string, d: number): number => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? Number(args[i + 1]) : d;
};
const str = (n: string): string | undefined => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const promptTokens = num('prompt-tokens', 64);
const newTokens = num('new-tokens', 64);
const repeats = num('repeats', 3);

const CONFIGS = {
  // What `chatsft demo` trains (src/demo/run.ts DEMO_DEFAULTS).
  demo: { vocab: 512, d: 64, layers: 2, heads: 4, kv: 4, inter: 256, tied: true },
  // bench/train.ts's default: 19.5 M parameters, vocab 32 002.
  '20m': { vocab: 32002, d: 256, layers: 4, heads: 4, kv: 4, inter: 688, tied: false },
} as const;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Seconds to generate `newTokens` for `batch` prompts, and seconds until the first token. */
async function timeOne(model: LlamaModel, batch: number, rng: Rng): Promise<{ total: number; first: number }> {
  const V = model.config.vocabSize;
  const prompts = Array.from({ length: batch }, () => Array.from({ length: promptTokens }, () => Math.floor(rng.next() * V)));
  const t0 = performance.now();
  let first = -1;
  await generate(engineStepModel(model), prompts, {
    maxNewTokens: newTokens,
    stopIds: [],
    onToken: () => {
      if (first < 0) first = performance.now();
    },
  });
  return { total: (performance.now() - t0) / 1000, first: (first - t0) / 1000 };
}

async function main(): Promise<void> {
  const { backend } = await initEngine();
  console.log(`backend ${backend}; prompt ${promptTokens} tokens, ${newTokens} new tokens per row, greedy, median of ${repeats}`);
  const only = str('only');
  for (const [name, c] of Object.entries(CONFIGS)) {
    if (only && only !== name) continue;
    const config = makeLlamaConfig({
      vocabSize: c.vocab,
      hiddenSize: c.d,
      intermediateSize: c.inter,
      numHiddenLayers: c.layers,
      numAttentionHeads: c.heads,
      numKeyValueHeads: c.kv,
      tieWordEmbeddings: c.tied,
    });
    const model = createModel(config, 0);
    const rng = new Rng(1);
    const tensorsBefore = tf.memory().numTensors;
    const line: string[] = [`${name.padEnd(4)}  ${(countParameters(model) / 1e6).toFixed(2)} M params`];
    try {
      for (const batch of [1, 16]) {
        await timeOne(model, batch, rng); // warm-up: kernel setup, allocations
        const runs: { total: number; first: number }[] = [];
        for (let r = 0; r < repeats; r++) runs.push(await timeOne(model, batch, rng));
        const total = median(runs.map((x) => x.total));
        line.push(`batch ${String(batch).padStart(2)}: ${((batch * newTokens) / total).toFixed(0).padStart(6)} tok/s`);
        if (batch === 1) line.push(`first token ${(1000 * median(runs.map((x) => x.first))).toFixed(1)} ms`);
      }
      if (tf.memory().numTensors !== tensorsBefore) line.push(`LEAK ${tf.memory().numTensors - tensorsBefore} tensors`);
    } finally {
      disposeModel(model);
    }
    console.log(line.join('  '));
  }
}

await main();
