// Usage: node dist/bench/generate_llamacpp.js model.gguf [--new-tokens 128] [--prompt-tokens 32] [--threads 2] [--repeats 3] [--json]
//        node dist/bench/generate_llamacpp.js --hf runs/chatsft --eot '<|im_end|>' [--dtype f32|f16] ...   (exports to a temp GGUF first)
/**
 * Greedy batch-1 generation speed of llama.cpp (node-llama-cpp) on a GGUF:
 * prefill time for the prompt and decode tokens/s, the number chatsft's own
 * generator is compared with. Stop ids are disabled so every run decodes
 * exactly --new-tokens tokens.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { exportGguf } from '../src/export/gguf.js';
import { openLlamaCpp } from '../src/export/llamacpp.js';

interface BenchResult {
  model: string;
  promptTokens: number;
  newTokens: number;
  threads: number | null;
  prefillMs: number;
  decodeTokensPerSec: number;
  runs: { prefillMs: number; decodeMs: number }[];
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'new-tokens': { type: 'string', default: '128' },
      'prompt-tokens': { type: 'string', default: '32' },
      threads: { type: 'string' },
      repeats: { type: 'string', default: '3' },
      hf: { type: 'string' },
      eot: { type: 'string' },
      dtype: { type: 'string', default: 'f32' },
      json: { type: 'boolean', default: false },
    },
  });
  const newTokens = Number(values['new-tokens']);
  const promptTokens = Number(values['prompt-tokens']);
  const repeats = Number(values.repeats);
  const threads = values.threads !== undefined ? Number(values.threads) : undefined;
  let file = positionals[0];
  let tmpDir: string | null = null;
  if (values.hf) {
    if (!values.eot) throw new Error('--hf needs --eot (the token that closes assistant turns)');
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-bench-'));
    file = path.join(tmpDir, 'model.gguf');
    exportGguf(values.hf, file, { eotToken: values.eot, dtype: values.dtype === 'f16' ? 'f16' : 'f32' });
  }
  if (!file) throw new Error('give a GGUF file or --hf DIR --eot TOKEN');
  try {
    const runner = await openLlamaCpp(file, promptTokens + newTokens + 8, threads !== undefined ? { threads } : {});
    try {
      // A fixed natural-language prompt, cut to the requested length.
      let ids: number[] = [];
      while (ids.length < promptTokens) ids = ids.concat(runner.tokenize(' The quick brown fox jumps over the lazy dog while the band plays on.'));
      ids = ids.slice(0, promptTokens);
      const runs: { prefillMs: number; decodeMs: number }[] = [];
      for (let r = 0; r < repeats + 1; r++) {
        const t0 = performance.now();
        let tFirst = 0;
        const out = await runner.generate(ids, newTokens, [], () => {
          if (tFirst === 0) tFirst = performance.now();
        });
        const t1 = performance.now();
        if (out.tokens.length !== newTokens) throw new Error(`generated ${out.tokens.length} tokens, expected ${newTokens}`);
        // The first token comes out of the prefill; the rest are decode steps.
        if (r > 0) runs.push({ prefillMs: tFirst - t0, decodeMs: t1 - tFirst }); // run 0 warms up
      }
      const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const res: BenchResult = {
        model: file,
        promptTokens,
        newTokens,
        threads: threads ?? null,
        prefillMs: median(runs.map((x) => x.prefillMs)),
        decodeTokensPerSec: (newTokens - 1) / (median(runs.map((x) => x.decodeMs)) / 1000),
        runs,
      };
      if (values.json) process.stdout.write(JSON.stringify(res) + '\n');
      else {
        process.stdout.write(`llama.cpp greedy batch 1: ${path.basename(file)}\n`);
        process.stdout.write(`  prompt ${promptTokens} tokens: prefill ${res.prefillMs.toFixed(1)} ms\n`);
        process.stdout.write(`  decode ${newTokens} tokens: ${res.decodeTokensPerSec.toFixed(1)} tokens/s (median of ${repeats})\n`);
      }
    } finally {
      await runner.close();
    }
  } finally {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(2);
});
