// Usage: node dist/bench/generate_llamacpp.js [--hf DIR] [--size demo|bench] [--new-tokens 128] [--prompt-tokens 32] [--threads 1[,2]] [--gguf-dtype f32|f16] [--repeats 3] [--profile] [--json]
//        node dist/bench/generate_llamacpp.js --hf /tmp/scale-ckpt/qwen05 --threads 1,2 --gguf-dtype f16 --new-tokens 16 --repeats 1   (Qwen2.5-0.5B shape: the engine loads it as `chatsft generate` does, with its memory plan)
//        node dist/bench/generate_llamacpp.js model.gguf ...   (llama.cpp only: a GGUF has no weights chatsft's engine can load)
/**
 * Greedy batch-1 generation speed of chatsft's engine (tfjs, KV cache) and of
 * llama.cpp (node-llama-cpp) on the same weights: the model folder is
 * exported to an f32 GGUF with chatsft's exporter, both generate from the
 * same prompt ids, and the ratio chatsft / llama.cpp of decode tokens/s is
 * printed (issue goal ≥ 0.5×). Stop ids are disabled so every run decodes
 * exactly --new-tokens tokens. Without --hf a random Llama is built in a temp
 * folder: `bench` = d 256, 4 layers, vocab 32 002 (19.5 M parameters, the
 * ENGINE-NOTES model), `demo` = the size `chatsft demo` trains.
 *
 * llama.cpp gets 1 thread by default: the engine's wasm backend is
 * single-threaded, so this compares kernels, not core counts.
 */
import fs from 'node:fs';
import { aggregateKernels } from './profile.js';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  createModel,
  disposeModel,
  initEngine,
  loadModel,
  makeLlamaConfig,
  readLlamaConfig,
  saveModel,
  tf,
  type LlamaModel,
} from '../src/engine/index.js';
import { describePlan, planMemory } from '../src/engine/plan.js';
import { engineStepModel } from '../src/generate/engine.js';
import { generate } from '../src/generate/loop.js';
import { writeDemoModelFolder } from '../src/demo/tokenizer.js';
import { discoverEot } from '../src/model/eot.js';
import { exportGguf } from '../src/export/gguf.js';
import { openLlamaCpp } from '../src/export/llamacpp.js';

interface Timing {
  prefillMs: number;
  decodeTokensPerSec: number;
  runs: { prefillMs: number; decodeMs: number }[];
}

const SIZES = {
  demo: { vocab: 512, d: 64, layers: 2, heads: 4, kvHeads: 4, inter: 256 },
  bench: { vocab: 32002, d: 256, layers: 4, heads: 4, kvHeads: 4, inter: 688 },
} as const;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Times `repeats` generations after one warm-up (kernel compilation, caches).
 * The first token comes out of the prefill; the other n - 1 are decode steps.
 */
async function timeRuns(repeats: number, newTokens: number, once: (onToken: () => void) => Promise<number>): Promise<Timing> {
  const runs: { prefillMs: number; decodeMs: number }[] = [];
  for (let r = 0; r < repeats + 1; r++) {
    const t0 = performance.now();
    let tFirst = 0;
    const n = await once(() => {
      if (tFirst === 0) tFirst = performance.now();
    });
    const t1 = performance.now();
    if (n !== newTokens) throw new Error(`generated ${n} tokens, expected ${newTokens}`);
    if (r > 0) runs.push({ prefillMs: tFirst - t0, decodeMs: t1 - tFirst });
  }
  return {
    prefillMs: median(runs.map((x) => x.prefillMs)),
    decodeTokensPerSec: (newTokens - 1) / (median(runs.map((x) => x.decodeMs)) / 1000),
    runs,
  };
}

async function buildRandomModel(dir: string, size: keyof typeof SIZES): Promise<void> {
  const s = SIZES[size];
  // The demo tokenizer has a few hundred tokens; ids above it are `[PADn]` in the GGUF, rows the LM head still computes.
  const corpus = Array.from(
    { length: 50 },
    (_, i) => `<|im_start|>user\nThe quick brown fox ${i}<|im_end|>\n<|im_start|>assistant\nJumps over the lazy dog ${i}.<|im_end|>\n`,
  );
  await writeDemoModelFolder(dir, corpus, { vocabSize: 300 });
  const cfg = makeLlamaConfig({
    vocabSize: s.vocab,
    hiddenSize: s.d,
    intermediateSize: s.inter,
    numHiddenLayers: s.layers,
    numAttentionHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    maxPositionEmbeddings: 2048,
  });
  const model = createModel(cfg, 1);
  saveModel(model, dir);
  disposeModel(model);
}

/** Kernel time of one decode step, by kernel and input shapes (tfjs profiler). */
async function profileStep(model: LlamaModel, prompt: number[]): Promise<string[]> {
  const sm = engineStepModel(model);
  try {
    const logits = sm.start([prompt], { maxNewTokens: 4 });
    let next = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[next]!) next = i;
    const prof = await tf.profile(() => {
      sm.step([0], [next]);
    });
    const { rows, totalMs, kernels } = aggregateKernels(prof);
    return [
      `  one decode step: ${kernels} kernels, ${totalMs.toFixed(2)} ms kernel time`,
      ...rows.slice(0, 10).map((a) => `    ${a.ms.toFixed(2).padStart(7)} ms ${String(a.n).padStart(3)}×  ${a.key}`),
    ];
  } finally {
    sm.dispose();
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      hf: { type: 'string' },
      size: { type: 'string', default: 'bench' },
      'new-tokens': { type: 'string', default: '128' },
      'prompt-tokens': { type: 'string', default: '32' },
      threads: { type: 'string', default: '1' },
      'gguf-dtype': { type: 'string', default: 'f32' },
      repeats: { type: 'string', default: '3' },
      profile: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const newTokens = Number(values['new-tokens']);
  const promptTokens = Number(values['prompt-tokens']);
  const repeats = Number(values.repeats);
  const threadList = String(values.threads).split(',').map(Number);
  const threads = threadList[0]!;
  const size = values.size as keyof typeof SIZES;
  if (!(size in SIZES)) throw new Error(`--size must be ${Object.keys(SIZES).join(' or ')}`);
  const log = (s: string): void => {
    if (!values.json) process.stdout.write(s + '\n');
  };

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-bench-gen-'));
  try {
    let dir: string | null = values.hf ?? null;
    let file = positionals[0] ?? null;
    let label = dir ?? file ?? '';
    if (file === null) {
      if (dir === null) {
        dir = path.join(tmp, 'model');
        label = `random ${size} Llama`;
        await buildRandomModel(dir, size);
      }
      file = path.join(tmp, 'model.gguf');
      // f32: the engine computes in f32, so both run the same numbers.
      exportGguf(dir, file, { eotToken: (await discoverEot(dir)).token, dtype: values['gguf-dtype'] === 'f16' ? 'f16' : 'f32' });
    }

    const llamas: [number, Timing][] = [];
    let ids: number[] = [];
    for (const th of threadList) {
      const runner = await openLlamaCpp(file, promptTokens + newTokens + 8, { threads: th });
      while (ids.length < promptTokens)
        ids = ids.concat(runner.tokenize(' The quick brown fox jumps over the lazy dog while the band plays on.'));
      ids = ids.slice(0, promptTokens);
      try {
        llamas.push([
          th,
          await timeRuns(repeats, newTokens, async (onToken) => (await runner.generate(ids, newTokens, [], onToken)).tokens.length),
        ]);
      } finally {
        await runner.close();
      }
    }
    const llama = llamas[0]![1];

    let engine: (Timing & { backend: string; params: number }) | null = null;
    const profile: string[] = [];
    if (dir !== null) {
      const { backend } = await initEngine();
      // As `chatsft generate` loads it: the memory plan decides what stays in host memory.
      const cfg = readLlamaConfig(path.join(dir, 'config.json'));
      const plan = planMemory({ config: cfg, mode: 'infer', batchSize: 1, seqLen: Math.min(cfg.maxPositionEmbeddings, 512) });
      if (plan.parameters > 50e6) log(describePlan(plan, 'infer'));
      const model = loadModel(dir, {
        hostLayers: plan.hostLayers,
        hostEmbedding: plan.hostEmbedding,
        frozenHead: plan.frozenHead,
        hostF32: true,
      });
      try {
        const t = await timeRuns(repeats, newTokens, async (onToken) => {
          const [r] = await generate(engineStepModel(model), [ids], { maxNewTokens: newTokens, stopIds: [], onToken });
          return r!.tokens.length;
        });
        const params = plan.parameters;
        engine = { ...t, backend, params };
        if (values.profile) profile.push(...(await profileStep(model, ids)));
      } finally {
        disposeModel(model);
      }
    }

    const ratio = engine ? engine.decodeTokensPerSec / llama.decodeTokensPerSec : null;
    if (values.json) {
      process.stdout.write(JSON.stringify({ model: label, promptTokens, newTokens, threads, engine, llamaCpp: llama, ratio }) + '\n');
      return;
    }
    log(`greedy batch 1: prompt ${promptTokens} tokens, ${newTokens} new tokens, median of ${repeats} runs after a warm-up`);
    if (engine) log(`model: ${label}, ${(engine.params / 1e6).toFixed(1)} M parameters, f32`);
    const row = (name: string, t: Timing): string =>
      `  ${name.padEnd(24)} prefill ${t.prefillMs.toFixed(1).padStart(8)} ms   decode ${t.decodeTokensPerSec.toFixed(1).padStart(8)} tokens/s  (${(1000 / t.decodeTokensPerSec).toFixed(2)} ms/token)`;
    if (engine) log(row(`chatsft (tfjs ${engine.backend})`, engine));
    for (const [th, t] of llamas) {
      log(row(`llama.cpp (${th} thread${th === 1 ? '' : 's'})`, t));
      if (engine)
        log(
          `  ratio chatsft / llama.cpp (${th} thread${th === 1 ? '' : 's'}) decode tokens/s: ${(engine.decodeTokensPerSec / t.decodeTokensPerSec).toFixed(2)}×  (goal ≥ 0.5×)`,
        );
    }
    for (const l of profile) log(l);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(2);
});
