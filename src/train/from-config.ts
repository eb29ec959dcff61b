/**
 * A training run from the shared config (SPEC §6): tokenizer setup → rows →
 * model (pretrained or from config, embeddings grown for added tokens) →
 * the engine's loop → a complete model folder. The CLI and the demo call it.
 */
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChatsftError } from '../errors.js';
import type { Row } from '../batch/types.js';
import type { SftConfig } from '../config/schema.js';
import { prepareRows, reportOf, requireExamples } from '../prepare/prepare.js';
import { checkManifest, MANIFEST, readManifest } from '../prepare/manifest.js';
import { formatDataReport, type DataReport } from '../data/report.js';
import { readShards } from '../prepare/shards.js';
import { encodeOptionsFrom, setupFromConfig } from '../prepare/from-config.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { saveTokenizerFiles, stopIdsOf } from '../model/save.js';
import {
  checkSlidingWindow,
  disposeModel,
  initEngine,
  readLlamaConfig,
  resizeTokenEmbeddings,
  storedDtype,
  type LoraSpec,
} from '../engine/index.js';
import { assertPlanFits, describePlan, planMemory, type PlanInput } from '../engine/plan.js';
import { availableParallelism } from 'node:os';
import { createProgress } from '../util/progress.js';
import { heldOutPrompts, splitHeldOut } from '../eval/heldout.js';
import { turnHeadersOf } from '../eval/runtime.js';
import { stopRateDropWarning, type StopRateSummary } from '../eval/stop_rate.js';
import { runTraining } from './loop.js';
import { engineStopRate } from './stop_eval.js';
import { claimRunDir } from './output.js';
import { loadOrCreateModel, runConfig } from './setup.js';
import type { TrainResult } from './types.js';
import { trainTorchFromConfig, type TorchEngineOptions } from '../torch/from-config.js';

export interface LoadedSplit {
  rows: Row[];
  eotIds: number[];
  supervisedEot: number;
  /** What happened to the lines of a JSONL split (absent for a prepared folder). */
  report?: DataReport;
}

/** A run's result and the data reports of its JSONL splits. */
export type TrainRun = TrainResult & { data_reports: { train?: DataReport; eval?: DataReport } };

/** Rows of a split: a prepared folder (checked against this tokenizer) or a JSONL file prepared in memory. */
export async function loadSplit(setup: TokenizerSetup, cfg: SftConfig, path: string, split: 'train' | 'eval'): Promise<LoadedSplit> {
  if (existsSync(path) && statSync(path).isDirectory()) {
    const m = readManifest(path);
    checkManifest(m, setup, { train_on: cfg.train_on, max_length: cfg.max_length ?? null, packing: cfg.packing }, join(path, MANIFEST));
    const stats = split === 'eval' ? m.eval : m;
    if (!stats) throw new ChatsftError('FILE_MISSING', 'the prepared folder has no eval split', path);
    return { rows: await readShards(path, split), eotIds: stats.eot_token_ids, supervisedEot: stats.supervised_eot };
  }
  const { rows, stats } = await prepareRows(setup, path, { ...encodeOptionsFrom(cfg), packing: cfg.packing });
  requireExamples(stats, path);
  return { rows, eotIds: stats.eot_token_ids, supervisedEot: stats.supervised_eot, report: reportOf(path, stats) };
}

/** Parameters of the model a config describes, without building it. */
function estimateParameters(cfg: SftConfig): number {
  const file = cfg.model_config ?? (cfg.model ? join(cfg.model, 'config.json') : undefined);
  if (!file || !existsSync(file)) return 0;
  const c = readLlamaConfig(file);
  const attn = c.hiddenSize * c.headDim * (c.numAttentionHeads * 2 + c.numKeyValueHeads * 2);
  const mlp = 3 * c.hiddenSize * c.intermediateSize;
  return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.numHiddenLayers * (attn + mlp);
}

/**
 * Two wasm threads train a 19.5 M-parameter model 1.5× faster (bench/train),
 * but their pool spins while idle, which slows small models and test runs;
 * so they are the default only for models of 5 M parameters and more, unless
 * CHATSFT_WASM_THREADS says otherwise.
 */
export function chooseWasmThreads(cfg: SftConfig, env: NodeJS.ProcessEnv = process.env): number | undefined {
  if (env['CHATSFT_WASM_THREADS'] !== undefined) return undefined; // initEngine reads the user's setting
  const cores = availableParallelism();
  return cores >= 2 && estimateParameters(cfg) >= 5e6 ? Math.min(cores, 4) : undefined;
}

export function loraSpecFrom(cfg: SftConfig, setup: TokenizerSetup, vocabSize: number): LoraSpec | null {
  if (!cfg.lora) return null;
  const te = cfg.lora.train_embeddings;
  const ids = te === 'all' ? Array.from({ length: vocabSize }, (_, i) => i) : te === 'new_tokens' ? setup.addedTokens.map((t) => t.id) : [];
  return { r: cfg.lora.r, alpha: cfg.lora.alpha, dropout: cfg.lora.dropout, targets: cfg.lora.targets, trainTokenIds: ids };
}

/** setup → train → save, as one readable function; the CLI and the demo call it. */
export async function trainFromConfig(
  cfg: SftConfig,
  opts: {
    resume?: boolean;
    /** Replace an earlier chatsft run in output_dir (never anything else). */
    overwrite?: boolean;
    quiet?: boolean;
    onLog?: (line: string) => void;
    /**
     * Rewrite the training rows before training (the demo's legacy run masks
     * labels by pad id here, as transformers' LM collator would).
     */
    transformRows?: (rows: Row[], setup: TokenizerSetup) => Row[];
    /** `torch`: the same run on PyTorch through the Python worker (src/torch/). */
    engine?: 'embedded' | 'torch';
    torch?: TorchEngineOptions;
  } = {},
): Promise<TrainRun> {
  if (!cfg.data.train) throw new ChatsftError('USAGE', 'missing data.train (or --data FILE)');
  if (!cfg.output_dir) throw new ChatsftError('USAGE', 'missing output_dir (or --output-dir DIR)');
  const setup = setupFromConfig(cfg);
  const loaded = await loadSplit(setup, cfg, cfg.data.train, 'train');
  const train = opts.transformRows ? { ...loaded, rows: opts.transformRows(loaded.rows, setup) } : loaded;
  const evalSplit = cfg.data.eval ? await loadSplit(setup, cfg, cfg.data.eval, 'eval') : undefined;
  // Dropped lines of both splits, reported before any time is spent training
  // (warnings, not progress: shown under --quiet too).
  for (const r of [loaded.report, evalSplit?.report]) {
    if (r) for (const l of formatDataReport(r)) (opts.onLog ?? ((x: string) => void process.stderr.write(`${x}\n`)))(`warning: ${l}`);
  }
  const dataReports = { ...(loaded.report ? { train: loaded.report } : {}), ...(evalSplit?.report ? { eval: evalSplit.report } : {}) };
  // Stop-rate prompts: data.eval's, else a slice of the training rows held out of training.
  let trainRows = train.rows;
  let heldOut = evalSplit?.rows ?? [];
  if (!evalSplit && cfg.eval.samples > 0) ({ train: trainRows, heldOut } = splitHeldOut(train.rows, cfg.eval.samples));
  const prompts = heldOutPrompts(heldOut, cfg.eval.samples);
  const stopIds = stopIdsOf(setup, train.eotIds);
  // output_dir is settled after the data loaded (its errors leave output_dir alone), before anything is written.
  const inputs = [
    cfg.data.train,
    ...(cfg.data.eval ? [cfg.data.eval] : []),
    ...(cfg.model ? [cfg.model] : []),
    ...(typeof cfg.model_config === 'string' ? [cfg.model_config] : []),
  ];
  const claimOutput = (log: (line: string) => void) =>
    claimRunDir(cfg.output_dir as string, { resume: Boolean(opts.resume), overwrite: Boolean(opts.overwrite), inputs, onNote: log });
  if (opts.engine === 'torch') {
    const claim = claimOutput(opts.onLog ?? ((line) => void (opts.quiet || process.stderr.write(`${line}\n`))));
    let done = false;
    try {
      // Same held-out prompts, stop ids and turn headers; the worker generates, eval/stop_rate.ts counts.
      const stopEval =
        prompts.length > 0
          ? { prompts, stopIds, maxNewTokens: cfg.eval.max_new_tokens, turnHeaders: await turnHeadersOf(setup) }
          : undefined;
      const r = await trainTorchFromConfig(cfg, setup, { ...train, rows: trainRows }, evalSplit, {
        ...opts,
        ...(stopEval ? { stopEval } : {}),
      });
      done = true;
      return { ...r, data_reports: dataReports };
    } finally {
      claim.release(done);
    }
  }
  const logPlan = (line: string): void => {
    if (opts.onLog) opts.onLog(line);
    else if (!opts.quiet) process.stderr.write(line + '\n');
  };
  const lora = loraSpecFrom(cfg, setup, setup.vocabSize);
  // The memory plan comes first: a model that cannot fit is refused before anything is allocated.
  const rc = runConfig(cfg.model, cfg.model_config);
  let hostLayers = 0;
  let hostEmbedding = false;
  let frozenHead = false;
  // The embedded engine's checkpointing follows the memory plan (torch's is --gradient-checkpointing).
  let checkpointing: boolean | undefined;
  if (rc) {
    const longest = train.rows.reduce((m, r) => Math.max(m, r.inputIds.length), 0);
    const inp: PlanInput = {
      config: { ...rc.config, vocabSize: Math.max(rc.config.vocabSize, setup.vocabSize) },
      mode: lora ? 'lora' : 'full',
      batchSize: cfg.batch_size,
      seqLen: Math.max(1, Math.min(longest, cfg.max_length ?? longest)),
      ...(lora ? { lora: { r: lora.r, targets: lora.targets, trainRows: lora.trainTokenIds.length } } : {}),
      ...(checkpointing !== undefined ? { checkpointing } : {}),
      // Only pretrained weights can stay in host memory (a fresh init lives in the heap).
      ...(rc.pretrained ? {} : { hostLayers: 0 }),
    };
    const plan = planMemory(inp);
    logPlan(describePlan(plan, inp.mode));
    assertPlanFits(plan, inp, cfg.model ?? cfg.model_config);
    hostLayers = plan.hostLayers;
    // resizeTokenEmbeddings below resizes a host table in place and rebuilds the frozen head.
    hostEmbedding = plan.hostEmbedding && rc.pretrained;
    frozenHead = plan.frozenHead && rc.pretrained;
    checkpointing = plan.checkpointing;
  }
  const wasmThreads = chooseWasmThreads(cfg);
  await initEngine(wasmThreads !== undefined ? { wasmThreads } : {});
  const loading = createProgress({ label: 'load', unit: 'MB', silent: Boolean(opts.quiet) });
  let loadTotalSet = false;
  const { model, pretrained } = loadOrCreateModel(cfg.model, cfg.model_config, cfg.seed, {
    hostLayers,
    hostEmbedding,
    frozenHead,
    allowExtraTensors: cfg.allow_extra_tensors,
    onProgress: (bytes, total) => {
      if (!loadTotalSet) {
        loading.setTotal(Math.round(total / 1e6));
        loadTotalSet = true;
      }
      loading.update(Math.round(bytes / 1e6));
    },
  });
  if (pretrained) loading.done('weights loaded');
  model.gradientCheckpointing = checkpointing ?? false;
  if (model.config.vocabSize < setup.vocabSize) resizeTokenEmbeddings(model, setup.vocabSize);
  const measureStopRate = engineStopRate(model, prompts, {
    stopIds,
    turnHeaders: await turnHeadersOf(setup),
    maxNewTokens: cfg.eval.max_new_tokens,
  });
  let atStart: StopRateSummary | null = null;
  try {
    checkSlidingWindow(
      model.config,
      [...trainRows, ...heldOut].reduce((n, r) => Math.max(n, r.inputIds.length), 0),
      'training rows',
    );
    // A pretrained start is measured first, so a run that unlearns stopping can say so.
    if (pretrained && prompts.length > 0) atStart = await measureStopRate();
  } catch (e) {
    disposeModel(model);
    throw e;
  }
  const progress = createProgress({ label: 'train', unit: 'steps', silent: Boolean(opts.quiet) });
  const log = (line: string): void => (opts.onLog ? opts.onLog(line) : progress.log(line));
  let claim: { release: (success: boolean) => void };
  try {
    claim = claimOutput(log);
  } catch (e) {
    disposeModel(model);
    throw e;
  }
  let totalShown = false;
  // The latest stop rate stays on the progress line between evaluations.
  let lastStop: number | undefined = atStart?.stop_rate;
  const stopShown = (now: number | undefined): string => {
    const v = now ?? lastStop;
    return v === undefined ? '' : ` stop ${Math.round(v * 100)}%`;
  };
  let result: TrainResult;
  let ok = false;
  try {
    result = await runTraining({
      model,
      rows: trainRows,
      ...(evalSplit ? { evalRows: evalSplit.rows } : {}),
      padId: setup.padId,
      paddingSide: setup.paddingSide,
      eotIds: train.eotIds.length ? train.eotIds : setup.eosId !== undefined ? [setup.eosId] : [],
      allowNoEot: cfg.allow_no_eot,
      hp: {
        lr: cfg.lr,
        weightDecay: cfg.weight_decay,
        warmupSteps: cfg.warmup_steps,
        schedule: cfg.schedule,
        maxGradNorm: cfg.max_grad_norm,
        batchSize: cfg.batch_size,
        gradAccum: cfg.grad_accum,
        ...(cfg.epochs !== undefined ? { epochs: cfg.epochs } : {}),
        ...(cfg.max_steps !== undefined ? { maxSteps: cfg.max_steps } : {}),
        seed: cfg.seed,
      },
      lora,
      // A LoRA run on a bf16/f16 base saves its merged weights in kind (PEFT's merge_and_unload keeps the dtype).
      ...(lora && pretrained && cfg.model ? { saveDtype: storedDtype(cfg.model) } : {}),
      evalEverySteps: cfg.eval.every_steps,
      ...(prompts.length > 0 ? { measureStopRate } : {}),
      checkpointEvery: cfg.checkpoint_every,
      outputDir: resolve(cfg.output_dir),
      resume: Boolean(opts.resume),
      baseModelPath: cfg.model ?? null,
      onStep: (e) => {
        if (e.stopRate !== undefined) lastStop = e.stopRate;
        if (!totalShown) {
          progress.setTotal(e.totalSteps);
          totalShown = true;
        }
        progress.update(e.step, {
          tokens: e.inputTokens,
          info: `loss ${e.loss.toFixed(4)}${e.evalLoss !== undefined ? ` eval ${e.evalLoss.toFixed(4)}` : ''}${stopShown(e.stopRate)} lr ${e.lr.toExponential(2)}`,
        });
      },
      // A step of a large model takes minutes: show where it is (micro-batch, layer) while it runs.
      onStepProgress: (e) => {
        if (!totalShown) {
          progress.setTotal(e.totalSteps);
          totalShown = true;
        }
        const micro = e.micros > 1 ? ` · micro ${e.micro}/${e.micros}` : '';
        const layer = e.layer !== undefined ? ` · ${e.phase} layer ${e.layer}/${e.layers}` : '';
        progress.status(`step ${e.step}/${e.totalSteps}${micro}${layer}`);
      },
      onLog: log,
      finalizeFolder: (dir) => saveTokenizerFiles(setup, dir, { eotIds: train.eotIds }),
    });
    ok = true;
  } catch (e) {
    // --overwrite: the new run is discarded and the earlier one put back; say so in the error.
    if (opts.overwrite && e instanceof ChatsftError) {
      const own = e.where !== undefined ? e.message.slice(e.where.length + 2) : e.message;
      throw new ChatsftError(
        e.code,
        `${own}. This --overwrite run (with any checkpoint it wrote) was discarded and the earlier run put back`,
        e.where,
      );
    }
    throw e;
  } finally {
    disposeModel(model);
    // --overwrite: the earlier run is deleted only now that the new one is complete, else put back.
    claim.release(ok);
  }
  progress.done(`trained ${result.steps} steps in ${result.seconds.toFixed(1)} s`);
  const end = result.stopRates[result.stopRates.length - 1]?.stop_rate ?? null;
  const warning = stopRateDropWarning(atStart?.stop_rate, end);
  if (warning) opts.onLog?.(warning);
  return { ...result, data_reports: dataReports, stopRateAtStart: atStart?.stop_rate ?? null, stopRateWarning: warning };
}
