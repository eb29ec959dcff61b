/**
 * The demo (SPEC §8): one small model, one dataset, one seed, trained twice,
 * differing only in the label pipeline, then evaluated on the same held-out
 * prompts with the same greedy settings.
 *
 *   legacy  = SPEC §1: no pad token → pad = eos, left padding, labels masked
 *             where input id == pad id (transformers' LM collator), so every
 *             real <|im_end|> loses its label.
 *   chatsft = the default pipeline (labels from spans, pad = <|endoftext|>).
 *
 * Optionally the forgetting pair: the stopping `chatsft` model is trained on
 * a new task (B) under each pipeline; its stop rate on task B prompts is
 * measured before and after.
 *
 *   const report = await runDemo({ ...DEMO_DEFAULTS, out: 'demo-out' });
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { replaceOutput, writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { ensureDir } from '../util/fs-errors.js';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { hfLmCollatorLabels, collate } from '../batch/collate.js';
import type { Row } from '../batch/types.js';
import { ConfigSchema } from '../config/schema.js';
import { countParameters, disposeModel, initEngine, loadModel, makeLlamaConfig, toHfConfig } from '../engine/index.js';
import { evaluateModel, type EvalReport } from '../eval/evaluate.js';
import { loadModelFolder } from '../model/folder.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { setupForInference } from '../eval/runtime.js';
import { trainFromConfig } from '../train/from-config.js';
import type { StopRatePoint } from '../train/metrics.js';
import { generateDemoData, renderChatml, toJsonl } from './data.js';
import { writeDemoModelFolder } from './tokenizer.js';
import { createProgress, type Progress } from '../util/progress.js';
import type { TorchEngineOptions } from '../torch/from-config.js';

export type Pipeline = 'legacy' | 'chatsft';

export interface DemoOptions {
  /** Keep everything here; a temporary folder (removed at the end) when absent. */
  out?: string;
  /** Replace an earlier demo output at `out` (only one the demo wrote; anything else is refused). */
  overwrite?: boolean;
  seed: number;
  trainSize: number;
  heldout: number;
  steps: number;
  batchSize: number;
  lr: number;
  /** Demo tokenizer vocabulary (bytes + merges + 3 specials). */
  vocabSize: number;
  hiddenSize: number;
  layers: number;
  heads: number;
  maxNewTokens: number;
  /** Run the forgetting pair (legacy-continued, chatsft-continued). */
  continued: boolean;
  continueSteps: number;
  continueLr: number;
  /** Stage messages ("[2/6] legacy: training 300 steps"). */
  onStage?: (line: string) => void;
  /** Show the train/eval progress bars (stderr). */
  progress?: boolean;
  /** Training engine (evaluation always runs on the embedded engine, on the saved folders). */
  engine?: 'embedded' | 'torch';
  torch?: TorchEngineOptions;
}

export interface DemoRun {
  name: string;
  pipeline: Pipeline;
  /** Supervised EOT positions in the training rows. */
  supervised_eot: number;
  /** Stop rate on the held-out prompts of the run's task. */
  stop_rate: number;
  mean_new_tokens: number;
  p95_new_tokens: number;
  final_loss: number;
  eval_loss: number | null;
  /** Training seconds. */
  seconds: number;
  eval_seconds: number;
  runaways: { total: number; new_turn_header: number; inside_text: number };
  /** Continued runs: the stop rate of the starting model on the same prompts. */
  stop_rate_before?: number;
  /** Stop rate measured during training (metrics.jsonl), step by step. */
  stop_rate_curve: StopRatePoint[];
  /** Set when the run started from a stopping model and unlearned it. */
  stop_rate_warning: string | null;
  task: 'A' | 'B';
  model_dir: string | null;
}

export interface DemoReport {
  runs: DemoRun[];
  settings: Omit<DemoOptions, 'out' | 'onStage' | 'progress' | 'torch'> & { parameters: number; stop_ids: number[] };
  heldout_examples: number;
  verdict: string[];
  total_seconds: number;
  out: string | null;
}

export const DEMO_DEFAULTS: Omit<DemoOptions, 'out' | 'onStage' | 'progress' | 'engine' | 'torch'> = {
  seed: 0,
  trainSize: 2000,
  heldout: 100,
  steps: 300,
  batchSize: 16,
  lr: 3e-3,
  vocabSize: 512,
  hiddenSize: 64,
  layers: 2,
  heads: 4,
  maxNewTokens: 64,
  continued: true,
  continueSteps: 150,
  continueLr: 1e-3,
};

/**
 * transformers' DataCollatorForLanguageModeling applied to chatsft's
 * assistant-only labels (what completion-only collators do): every position
 * whose input id equals the pad id loses its label. With pad = <|im_end|>
 * that is every EOT. Rows stay unpadded; the engine's collator pads later,
 * and padding carries no label either way.
 */
export function legacyMaskRows(rows: Row[], setup: TokenizerSetup): Row[] {
  return rows.map((row) => {
    const batch = collate([row], { padId: setup.padId, paddingSide: setup.paddingSide });
    const masked = hfLmCollatorLabels(batch, setup.padId, 'labels');
    // collate() unsupervises position 0 (never a target); keep the row's own value there.
    return { ...row, labels: Array.from(masked, (y, i) => (i === 0 ? (row.labels[0] as number) : y)) };
  });
}

/** Config of a run: the pipeline's pad/padding/label choices, the rest shared. */
function runConfig(p: Pipeline, model: string, train: string, evalData: string, outDir: string, steps: number, lr: number, o: DemoOptions) {
  return ConfigSchema.parse({
    model,
    data: { train, eval: evalData },
    output_dir: outDir,
    max_steps: steps,
    batch_size: o.batchSize,
    lr,
    warmup_steps: Math.min(20, Math.floor(steps / 10)),
    seed: o.seed,
    // Five evaluations per run give metrics.jsonl and loss.svg a stop-rate curve.
    eval: { every_steps: Math.max(1, Math.floor(steps / 5)), max_new_tokens: o.maxNewTokens, samples: 32 },
    ...(p === 'legacy' ? { pad: 'eos', padding_side: 'left', allow_no_eot: true } : {}),
  });
}

async function evaluateFolder(dir: string, label: string, heldout: string, o: DemoOptions): Promise<EvalReport & { parameters: number }> {
  // The folder as saved, reloaded: what a user (or the export) gets.
  const setup = setupForInference(loadModelFolder(dir), 'model');
  const model = loadModel(dir);
  let progress: Progress | undefined;
  try {
    const { report } = await evaluateModel({
      setup,
      data: heldout,
      model,
      maxNewTokens: o.maxNewTokens,
      batchSize: 16,
      onProgress: (done, total) => {
        progress ??= createProgress({ label: `eval ${label}`, unit: 'prompts', total, silent: !o.progress });
        progress.update(done);
      },
    });
    progress?.done();
    return { ...report, parameters: countParameters(model) };
  } finally {
    disposeModel(model);
  }
}

/** Written first into a demo's --out folder: --overwrite replaces only a folder that carries it. */
export const DEMO_MARKER = 'chatsft-demo.json';

/** Why `dir` is not a demo output (null when it is; older demo outputs are recognised by their report.json). */
export function notDemoFolder(dir: string): string | null {
  for (const [file, ok] of [
    [DEMO_MARKER, (m: Record<string, unknown>) => m['generator'] === 'chatsft' && m['kind'] === 'demo'],
    [
      'report.json',
      (m: Record<string, unknown>) => Array.isArray(m['runs']) && Array.isArray(m['verdict']) && typeof m['settings'] === 'object',
    ],
  ] as const) {
    try {
      if (ok(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>)) return null;
    } catch {
      // missing or not JSON
    }
  }
  return `not a folder written by chatsft demo (no ${DEMO_MARKER})`;
}

/**
 * With `out`: built in a temp sibling and swapped in by replaceOutput (the
 * same ownership rule as prepare/export: a non-empty folder the demo did
 * not write is refused, --overwrite replaces only an earlier demo output).
 * Without: a temporary folder, removed at the end.
 */
export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  if (!o.out) {
    const root = mkdtempSync(join(tmpdir(), 'chatsft-demo-'));
    try {
      return await runDemoIn(root, null, o);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  const final = resolve(o.out);
  return replaceOutput(final, (tmp) => runDemoIn(tmp, final, o), {
    kind: 'dir',
    overwrite: Boolean(o.overwrite),
    notOwned: notDemoFolder,
    flag: '--out',
    onNote: (line) => o.onStage?.(line),
  });
}

/** The demo, written under `root`; `final` is where the folder will live (the report names paths there). */
async function runDemoIn(root: string, final: string | null, o: DemoOptions): Promise<DemoReport> {
  const t0 = performance.now();
  const stage = o.onStage ?? (() => {});
  if (final) writeJsonAtomic(join(root, DEMO_MARKER), { generator: 'chatsft', kind: 'demo', created: new Date().toISOString() });
  ensureDir(join(root, 'data'));
  await initEngine();
  const totalStages = o.continued ? 6 : 3;
  let n = 0;
  const next = (what: string): void => stage(`[${++n}/${totalStages}] ${what}`);

  // Data and the base folder (tokenizer + config.json, random init).
  next('data, tokenizer and a small model');
  const a = generateDemoData({ seed: o.seed, train: o.trainSize, heldout: o.heldout, task: 'A' });
  const b = generateDemoData({ seed: o.seed, train: o.trainSize, heldout: o.heldout, task: 'B' });
  const files = {
    trainA: join(root, 'data', 'train.jsonl'),
    heldoutA: join(root, 'heldout.jsonl'),
    trainB: join(root, 'data', 'task_b_train.jsonl'),
    heldoutB: join(root, 'data', 'task_b_heldout.jsonl'),
  };
  writeFileAtomic(files.trainA, toJsonl(a.train));
  writeFileAtomic(files.heldoutA, toJsonl(a.heldout));
  writeFileAtomic(files.trainB, toJsonl(b.train));
  writeFileAtomic(files.heldoutB, toJsonl(b.heldout));
  const base = join(root, 'base');
  const tok = await writeDemoModelFolder(base, [...a.train, ...b.train].map(renderChatml), { vocabSize: o.vocabSize });
  const config = makeLlamaConfig({
    vocabSize: tok.vocabSize,
    hiddenSize: o.hiddenSize,
    intermediateSize: o.hiddenSize * 4,
    numHiddenLayers: o.layers,
    numAttentionHeads: o.heads,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 512,
    bosTokenId: tok.ids.endoftext,
    eosTokenId: tok.ids.imEnd,
  });
  writeFileAtomic(join(base, 'config.json'), JSON.stringify(toHfConfig(config), null, 2) + '\n');

  const runs: DemoRun[] = [];
  let stopIds: number[] = [];
  let parameters = 0;
  const train = async (
    name: string,
    p: Pipeline,
    from: string,
    data: string,
    heldout: string,
    steps: number,
    lr: number,
    task: 'A' | 'B',
  ): Promise<DemoRun> => {
    const dir = join(root, name);
    rmSync(dir, { recursive: true, force: true });
    const cfg = runConfig(p, from, data, heldout, dir, steps, lr, o);
    next(`${name}: training ${steps} steps (${p === 'legacy' ? 'pad = eos, left padding, labels masked by pad id' : 'chatsft labels'})`);
    const quiet = !o.progress;
    const result = await trainFromConfig(cfg, {
      quiet,
      onLog: () => {},
      ...(p === 'legacy' ? { transformRows: legacyMaskRows } : {}),
      ...(o.engine ? { engine: o.engine } : {}),
      ...(o.torch ? { torch: o.torch } : {}),
    });
    const ev = await evaluateFolder(dir, name, heldout, o);
    stopIds = ev.stop_ids;
    parameters = ev.parameters;
    return {
      name,
      pipeline: p,
      supervised_eot: result.supervisedEot,
      stop_rate: ev.stop_rate ?? 0,
      mean_new_tokens: ev.mean_new_tokens ?? 0,
      p95_new_tokens: ev.p95_new_tokens ?? 0,
      final_loss: result.finalLoss,
      eval_loss: ev.loss,
      seconds: result.seconds,
      eval_seconds: ev.seconds.generation + ev.seconds.loss,
      runaways: ev.runaways ?? { total: 0, new_turn_header: 0, inside_text: 0 },
      stop_rate_curve: result.stopRates,
      stop_rate_warning: result.stopRateWarning ?? null,
      task,
      model_dir: final ? join(final, name) : null,
    };
  };

  runs.push(await train('legacy', 'legacy', base, files.trainA, files.heldoutA, o.steps, o.lr, 'A'));
  runs.push(await train('chatsft', 'chatsft', base, files.trainA, files.heldoutA, o.steps, o.lr, 'A'));
  if (o.continued) {
    const start = join(root, 'chatsft');
    next('chatsft on task B prompts, before continued training');
    const before = await evaluateFolder(start, 'chatsft (task B)', files.heldoutB, o);
    for (const p of ['legacy', 'chatsft'] as const) {
      const run = await train(`${p}-continued`, p, start, files.trainB, files.heldoutB, o.continueSteps, o.continueLr, 'B');
      runs.push({ ...run, stop_rate_before: before.stop_rate ?? 0 });
    }
  }

  const report: DemoReport = {
    runs,
    settings: { ...DEMO_DEFAULTS, ...pick(o), parameters, stop_ids: stopIds },
    heldout_examples: a.heldout.length,
    verdict: verdict(runs),
    total_seconds: (performance.now() - t0) / 1000,
    out: final,
  };
  if (final) writeFileAtomic(join(root, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  return report;
}

function pick(o: DemoOptions): Omit<DemoOptions, 'out' | 'onStage' | 'progress' | 'torch'> {
  const { out: _out, overwrite: _o, onStage: _s, progress: _p, torch: _t, ...rest } = o;
  return rest;
}

const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;

/** Two lines that say what the numbers mean (computed, never canned). */
export function verdict(runs: readonly DemoRun[]): string[] {
  const legacy = runs.find((r) => r.name === 'legacy');
  const chatsft = runs.find((r) => r.name === 'chatsft');
  if (!legacy || !chatsft) return [];
  const lines = [
    `legacy supervised ${legacy.supervised_eot} end-of-turn tokens and stopped on ${pct(legacy.stop_rate)} of held-out prompts (mean ${legacy.mean_new_tokens.toFixed(1)} new tokens);`,
    `chatsft supervised ${chatsft.supervised_eot} and stopped on ${pct(chatsft.stop_rate)} (mean ${chatsft.mean_new_tokens.toFixed(1)}): same model, data, seed and steps, only the labels differ.`,
  ];
  const lc = runs.find((r) => r.name === 'legacy-continued');
  const cc = runs.find((r) => r.name === 'chatsft-continued');
  if (lc && cc && lc.stop_rate_before !== undefined) {
    lines.push(
      `continued on task B, the stopping model went from ${pct(lc.stop_rate_before)} to ${pct(lc.stop_rate)} under legacy labels and to ${pct(cc.stop_rate)} under chatsft labels.`,
    );
  }
  return lines;
}
