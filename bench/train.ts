/**
 * Training throughput of the engine against PyTorch on the same model/batch.
 *
 *   node dist/bench/train.js [--steps 3] [--warmup 1] [--small | --demo] [--profile] [--no-ref] [--engine torch [--nproc N] [--device cpu|cuda]]
 *   node dist/bench/train.js --shape smollm2-135m|qwen2.5-0.5b|qwen2.5-1.5b [--full] [--seq 128] [--batch 1]
 *
 * --shape: a random-weight bf16 checkpoint with the release's shapes (generated under
 * /tmp/scale-ckpt/<shape> when missing), LoRA r 16 on all projections (--full: full
 * fine-tuning), loaded and planned as `chatsft train` does (host offload, checkpointing).
 *
 * Prints tokens/s, achieved GFLOPS (6·N·tokens + attention) and peak RSS for
 * tfjs, then for bench/train_ref.py (torch, 2 threads, OMP_WAIT_POLICY=PASSIVE)
 * and the ratio. `--engine torch` also runs chatsft's own PyTorch worker
 * (`train --engine torch`, src/torch/) on the same model, rows and seed and
 * prints both engines side by side.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { aggregateKernels } from './profile.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { collate } from '../src/batch/collate.js';
import fs from 'node:fs';
import {
  ADAMW_DEFAULTS,
  Rng,
  addLora,
  createAdamW,
  createModel,
  initEngine,
  loadModel,
  makeLlamaConfig,
  parseLlamaConfig,
  tf,
  trainStep,
  trainableVariables,
  type LlamaModel,
} from '../src/engine/index.js';
import { describePlan, planMemory } from '../src/engine/plan.js';
import { makeCheckpoint, SHAPES, type ShapeName } from './checkpoints.js';
import { LORA_TARGETS } from '../src/engine/lora.js';
import { wasmThreads } from '../src/engine/backend.js';
import type { Row } from '../src/batch/types.js';
import type { LlamaConfig } from '../src/hf/config.js';
import { runTorchTraining } from '../src/torch/run.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const args = process.argv.slice(2);
const flag = (n: string) => args.includes(`--${n}`);
const num = (n: string, d: number) => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? Number(args[i + 1]) : d;
};

// The ENGINE-NOTES model: 19.5 M parameters, vocab 32 002, d 256, 4 layers, batch 8 × 256.
// --small: the ENGINE-NOTES tiny Llama; --demo: the size `chatsft demo` trains.
const shapeArg = (() => {
  const i = args.indexOf('--shape');
  return i >= 0 ? (args[i + 1] as ShapeName) : undefined;
})();
const shapeCfg = shapeArg ? parseLlamaConfig(SHAPES[shapeArg], shapeArg) : undefined;
const loraOn = Boolean(shapeArg) && !flag('full');
const c = shapeCfg
  ? {
      vocab: shapeCfg.vocabSize,
      d: shapeCfg.hiddenSize,
      layers: shapeCfg.numHiddenLayers,
      heads: shapeCfg.numAttentionHeads,
      kv_heads: shapeCfg.numKeyValueHeads,
      inter: shapeCfg.intermediateSize,
      batch: num('batch', 1),
      seq: num('seq', 128),
      tied: shapeCfg.tieWordEmbeddings,
      bias: shapeCfg.attentionBias,
      rope_theta: shapeCfg.ropeTheta,
      ...(loraOn ? { lora: { r: 16, alpha: 32, targets: [...LORA_TARGETS] } } : {}),
    }
  : flag('small')
    ? { vocab: 512, d: 128, layers: 2, heads: 4, kv_heads: 4, inter: 344, batch: 32, seq: 64 }
    : flag('demo')
      ? { vocab: 512, d: 64, layers: 2, heads: 4, kv_heads: 4, inter: 256, batch: 16, seq: 96 }
      : { vocab: 32002, d: 256, layers: 4, heads: 4, kv_heads: 4, inter: 688, batch: 8, seq: 256 };
const steps = num('steps', 3);
let rowsForTorch: Row[] = [];
let configForTorch: LlamaConfig | null = null;
const warmup = num('warmup', 1);

/** Training FLOPs per token: 6 × matmul params + causal attention (6·L·T·d: QKᵀ and PV, fwd+bwd, half the square). */
function flopsPerToken(): number {
  const hd = c.d / c.heads;
  const perLayer = c.d * (c.heads * hd) * 2 + c.d * (c.kv_heads * hd) * 2 + 3 * c.d * c.inter;
  const matmulParams = c.layers * perLayer + c.vocab * c.d;
  return 6 * matmulParams + 6 * c.layers * c.seq * c.d;
}

async function main(): Promise<void> {
  const { backend } = await initEngine();
  let model: LlamaModel;
  if (shapeArg && shapeCfg) {
    const dir = `/tmp/scale-ckpt/${shapeArg}`;
    if (!fs.existsSync(`${dir}/model.safetensors.index.json`)) makeCheckpoint(shapeArg, dir);
    const inp = {
      config: shapeCfg,
      mode: loraOn ? ('lora' as const) : ('full' as const),
      batchSize: c.batch,
      seqLen: c.seq,
      ...(loraOn ? { lora: { r: 16, targets: [...LORA_TARGETS], trainRows: 0 } } : {}),
    };
    const plan = planMemory(inp);
    console.log(describePlan(plan, inp.mode));
    const t0 = performance.now();
    model = loadModel(dir, { hostLayers: plan.hostLayers, hostEmbedding: plan.hostEmbedding, frozenHead: plan.frozenHead });
    console.log(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    model.gradientCheckpointing = plan.checkpointing;
    if (loraOn) addLora(model, { r: 16, alpha: 32, dropout: 0, targets: [...LORA_TARGETS], trainTokenIds: [] }, 1);
  } else {
    const config = makeLlamaConfig({
      vocabSize: c.vocab,
      hiddenSize: c.d,
      intermediateSize: c.inter,
      numHiddenLayers: c.layers,
      numAttentionHeads: c.heads,
      numKeyValueHeads: c.kv_heads,
    });
    model = createModel(config, 0);
  }
  const rng = new Rng(1);
  const rows = Array.from({ length: c.batch }, () => {
    const ids = Array.from({ length: c.seq }, () => Math.floor(rng.next() * c.vocab));
    return { inputIds: ids, labels: ids };
  });
  const batch = collate(rows, { padId: 0, paddingSide: 'right' });
  rowsForTorch = rows;
  configForTorch = model.config;
  const opt = createAdamW(trainableVariables(model));
  const hp = { ...ADAMW_DEFAULTS, maxGradNorm: 1 };
  const times: number[] = [];
  let cpuSeconds = 0;
  for (let s = 0; s < warmup + steps; s++) {
    const t = performance.now();
    const cpu0 = process.cpuUsage();
    const r = trainStep(model, [batch], opt, 1e-4, hp);
    const dt = (performance.now() - t) / 1000;
    if (s >= warmup) {
      times.push(dt);
      const cpu = process.cpuUsage(cpu0);
      cpuSeconds += (cpu.user + cpu.system) / 1e6;
    }
    console.error(`step ${s} loss ${r.loss.toFixed(4)} ${dt.toFixed(2)} s`);
  }
  const sPerStep = times.reduce((a, b) => a + b) / times.length;
  const tokens = c.batch * c.seq;
  const fpt = flopsPerToken();
  const ours = { tokensPerS: tokens / sPerStep, gflops: (fpt * tokens) / sPerStep / 1e9, rssMb: process.resourceUsage().maxRSS / 1024 };
  console.log(
    `model: vocab ${c.vocab}, d ${c.d}, ${c.layers} layers, batch ${c.batch} × ${c.seq}; ${(fpt / 6 / 1e6).toFixed(1)} M matmul params`,
  );
  const cpuPerWall = cpuSeconds / (times.reduce((a, b) => a + b) || 1);
  console.log(
    `tfjs (${backend}, ${await wasmThreads()} thread(s), cpu/wall ${cpuPerWall.toFixed(2)}): ${sPerStep.toFixed(2)} s/step, ${ours.tokensPerS.toFixed(0)} tokens/s, ${ours.gflops.toFixed(1)} GFLOPS, peak RSS ${ours.rssMb.toFixed(0)} MiB`,
  );

  if (flag('profile')) {
    const prof = await tf.profile(() => {
      trainStep(model, [batch], opt, 1e-4, hp);
    });
    const { rows, totalMs, kernels } = aggregateKernels(prof);
    console.log(`profile: ${kernels} kernels, ${totalMs.toFixed(0)} ms kernel time`);
    for (const a of rows.slice(0, 15)) console.log(`  ${a.ms.toFixed(0).padStart(6)} ms ${String(a.n).padStart(5)}×  ${a.key}`);
  }

  if (flag('engine') && args[args.indexOf('--engine') + 1] === 'torch')
    await torchEngine(fpt, tokens, rowsForTorch, configForTorch!, ours, sPerStep);
  if (flag('no-ref')) return;
  const py = '/usr/bin/python3';
  if (spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0) {
    console.log('PyTorch reference skipped: /usr/bin/python3 cannot import torch');
    return;
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = path.join(here, '..', '..', 'bench', 'train_ref.py');
  const out = execFileSync(py, [script, JSON.stringify({ ...c, steps, warmup })], {
    encoding: 'utf8',
    env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' },
  });
  const ref = JSON.parse(out) as { s_per_step: number; tokens_per_s: number; peak_rss_mb: number };
  console.log(
    `torch (2 threads): ${ref.s_per_step.toFixed(2)} s/step, ${ref.tokens_per_s.toFixed(0)} tokens/s, ${((fpt * tokens) / ref.s_per_step / 1e9).toFixed(1)} GFLOPS, peak RSS ${ref.peak_rss_mb.toFixed(0)} MiB`,
  );
  console.log(`ratio tfjs / torch tokens/s: ${(ours.tokensPerS / ref.tokens_per_s).toFixed(2)}`);
}

/** The same model (config + seed 0), rows and step count through runTorchTraining. */
async function torchEngine(
  fpt: number,
  tokens: number,
  rows: Row[],
  config: LlamaConfig,
  ours: { tokensPerS: number; gflops: number },
  sPerStep: number,
): Promise<void> {
  const out = mkdtempSync(path.join(tmpdir(), 'chatsft-bench-torch-'));
  const times: number[] = [];
  try {
    const device = args.includes('--device') ? (args[args.indexOf('--device') + 1] as 'cpu' | 'cuda') : 'auto';
    const r = await runTorchTraining({
      config,
      init: { kind: 'seed' },
      vocabSize: config.vocabSize,
      rows,
      padId: 0,
      paddingSide: 'right',
      eotIds: [],
      allowNoEot: true,
      hp: {
        lr: 1e-4,
        weightDecay: 0,
        warmupSteps: 0,
        schedule: 'constant',
        maxGradNorm: 1,
        batchSize: c.batch,
        gradAccum: 1,
        maxSteps: warmup + steps,
        seed: 0,
      },
      outputDir: out,
      nproc: num('nproc', 1),
      device,
      onStep: (e) => {
        const dt = e.inputTokens / e.tokensPerSecond;
        if (e.step > warmup) times.push(dt);
        console.error(`torch step ${e.step - 1} loss ${e.loss.toFixed(4)} ${dt.toFixed(2)} s`);
      },
      onReady: (info) =>
        console.error(`torch worker: torch ${info.torch}, ${info.device_name}, ${info.threads} thread(s), ${info.world_size} process(es)`),
    });
    const tps = times.reduce((a, b) => a + b, 0) / times.length;
    const row = (name: string, sps: number) =>
      `${name.padEnd(28)} ${sps.toFixed(2).padStart(8)} ${(tokens / sps).toFixed(0).padStart(10)} ${((fpt * tokens) / sps / 1e9).toFixed(1).padStart(8)}`;
    console.log(`\n${'engine'.padEnd(28)} ${'s/step'.padStart(8)} ${'tokens/s'.padStart(10)} ${'GFLOPS'.padStart(8)}`);
    console.log(row('embedded (tfjs-wasm)', sPerStep));
    console.log(row(`torch (${r.device}${r.worldSize > 1 ? ` × ${r.worldSize}` : ''})`, tps));
    console.log(`ratio torch / embedded tokens/s: ${(tokens / tps / ours.tokensPerS).toFixed(2)}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

await main();
