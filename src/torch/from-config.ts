/**
 * The shared config (SPEC §6) on the torch engine: the same rows, schedule
 * and outputs as trainFromConfig's embedded run; the model is described to
 * the worker (a pretrained folder, or config + seed) instead of built here.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SftConfig } from '../config/schema.js';
import { ChatsftError } from '../errors.js';
import { parseLlamaConfig, readLlamaConfig, type LlamaConfig } from '../engine/index.js';
import { saveTokenizerFiles } from '../model/save.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import type { LoadedSplit } from '../train/from-config.js';
import { hyperParamsFrom, loraSpecFrom, trainingEotIds } from '../train/from-config.js';
import { createProgress } from '../util/progress.js';
import { runTorchTraining, type TorchTrainResult } from './run.js';
import type { StopEval } from './stop.js';
import { evalPrompts } from '../eval/evaluate.js';
import { chatRuntime } from '../eval/runtime.js';

export interface TorchEngineOptions {
  nproc?: number;
  python?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  gradientCheckpointing?: boolean;
  precision?: 'auto' | 'float32' | 'bf16';
  /** Stop (as if killed) after this many steps, without the final save; for tests. */
  stopAfterSteps?: number;
}

/** As loadOrCreateModel (src/train/setup.ts) decides, without loading any weights. */
export function modelSource(
  modelDir: string | undefined,
  modelConfig: string | undefined,
): { config: LlamaConfig; init: { kind: 'folder'; path: string } | { kind: 'seed' } } {
  const hasWeights =
    modelDir !== undefined &&
    fs.existsSync(modelDir) &&
    fs.readdirSync(modelDir).some((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json');
  if (hasWeights && modelConfig === undefined)
    return { config: readLlamaConfig(path.join(modelDir, 'config.json')), init: { kind: 'folder', path: modelDir } };
  if (modelConfig !== undefined) return { config: readLlamaConfig(modelConfig), init: { kind: 'seed' } };
  const cfgFile = modelDir ? path.join(modelDir, 'config.json') : undefined;
  if (cfgFile && fs.existsSync(cfgFile)) return { config: readLlamaConfig(cfgFile), init: { kind: 'seed' } };
  throw new ChatsftError('FILE_MISSING', 'no weights (*.safetensors) and no config.json to start from; set model_config', modelDir);
}

/** Prompts held out for the stop rate during training: the eval conversations (a JSONL file), at most this many. */
export const STOP_EVAL_PROMPTS = 64;

async function stopEvalFor(cfg: SftConfig, setup: TokenizerSetup): Promise<StopEval | undefined> {
  const file = cfg.data.eval;
  // A prepared folder holds labelled rows, not conversations to prompt with.
  if (!file || !fs.existsSync(file) || fs.statSync(file).isDirectory()) return undefined;
  const { prompts } = await evalPrompts(setup, file, STOP_EVAL_PROMPTS);
  if (prompts.length === 0) return undefined;
  const runtime = await chatRuntime(setup);
  return {
    prompts: prompts.map((p) => p.ids),
    stopIds: runtime.stopIds,
    maxNewTokens: cfg.eval.max_new_tokens,
    turnHeaders: runtime.turnHeaders.map((h) => [...h]),
  };
}

export async function trainTorchFromConfig(
  cfg: SftConfig,
  setup: TokenizerSetup,
  train: LoadedSplit,
  evalSplit: LoadedSplit | undefined,
  opts: { resume?: boolean; quiet?: boolean; onLog?: (line: string) => void; torch?: TorchEngineOptions; stopEval?: StopEval },
): Promise<TorchTrainResult> {
  const { config, init } = modelSource(cfg.model, cfg.model_config);
  const vocabSize = Math.max(config.vocabSize, setup.vocabSize);
  // trainFromConfig passes the held-out prompts the embedded engine uses (data.eval rows or a training slice).
  const stopEval = opts.stopEval ?? (await stopEvalFor(cfg, setup));
  const progress = createProgress({ label: 'train', unit: 'steps', silent: Boolean(opts.quiet) });
  let totalShown = false;
  const t = opts.torch ?? {};
  const result = await runTorchTraining({
    config: parseLlamaConfig(config.raw, 'config.json'),
    init,
    vocabSize,
    rows: train.rows,
    ...(evalSplit ? { evalRows: evalSplit.rows } : {}),
    padId: setup.padId,
    paddingSide: setup.paddingSide,
    eotIds: trainingEotIds(train, setup),
    allowNoEot: cfg.allow_no_eot,
    hp: hyperParamsFrom(cfg),
    lora: loraSpecFrom(cfg, setup, setup.vocabSize),
    evalEverySteps: cfg.eval.every_steps,
    checkpointEvery: cfg.checkpoint_every,
    outputDir: path.resolve(cfg.output_dir!),
    resume: Boolean(opts.resume),
    baseModelPath: cfg.model ?? null,
    ...(t.nproc !== undefined ? { nproc: t.nproc } : {}),
    ...(t.python !== undefined ? { python: t.python } : {}),
    ...(t.device !== undefined ? { device: t.device } : {}),
    gradientCheckpointing: Boolean(t.gradientCheckpointing),
    ...(stopEval ? { stopEval } : {}),
    ...(t.precision !== undefined ? { precision: t.precision } : {}),
    ...(t.stopAfterSteps !== undefined ? { stopAfterSteps: t.stopAfterSteps } : {}),
    onStep: (e) => {
      if (!totalShown) {
        progress.setTotal(e.totalSteps);
        totalShown = true;
      }
      progress.update(e.step, {
        tokens: e.inputTokens,
        info: `loss ${e.loss.toFixed(4)}${e.evalLoss !== undefined ? ` eval ${e.evalLoss.toFixed(4)}` : ''} lr ${e.lr.toExponential(2)}`,
      });
    },
    onLog: (line) => (opts.onLog ? opts.onLog(line) : progress.log(line)),
    finalizeFolder: (dir) => saveTokenizerFiles(setup, dir, { eotIds: train.eotIds }),
  });
  progress.done(
    `trained ${result.steps} steps in ${result.seconds.toFixed(1)} s on ${result.device}${result.worldSize > 1 ? ` × ${result.worldSize} processes` : ''}`,
  );
  return result;
}
