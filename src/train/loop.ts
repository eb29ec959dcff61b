/**
 * A training run, top to bottom: setup → train → saveCheckpoint → cleanup.
 *
 *   const result = await runTraining({ model, rows, padId, paddingSide: 'right', eotIds, hp, outputDir });
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { collate } from '../batch/collate.js';
import type { Row } from '../batch/types.js';
import { ChatsftError } from '../errors.js';
import {
  ADAMW_DEFAULTS,
  Rng,
  addLora,
  createAdamW,
  disposeAdamW,
  evalLoss,
  initEngine,
  lrAt,
  mergedTensor,
  saveAdapter,
  saveModel,
  trainStep,
  trainableVariables,
  type AdamWState,
  type Schedule,
  tf,
} from '../engine/index.js';
import { findCheckpoint, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { assertFiniteTensors, divergedError } from './diverge.js';
import { ensureDir } from '../util/fs-errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { DataOrder, batches, realTokens, requireSupervisedEot, scheduleFor } from './data.js';
import type { StopRateSummary } from '../eval/stop_rate.js';
import { appendMetrics, lossCurveSvg, readMetrics, stopFields, stopRateCurve, truncateMetrics } from './metrics.js';
import type { TrainOptions, TrainResult } from './types.js';

interface Run {
  opts: TrainOptions;
  vars: Map<string, tf.Variable>;
  opt: AdamWState;
  order: DataOrder;
  schedule: Schedule;
  totalSteps: number;
  step: number;
  rng: Rng;
  fingerprint: string;
  losses: number[];
  supervisedEot: number;
  resumedFrom: number | null;
}

export async function runTraining(opts: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  const run = await setup(opts);
  try {
    const { tokens, stopped } = await train(run);
    if (stopped) return result(run, null, t0, tokens);
    const evalLossValue = evaluate(run);
    const stop = (await opts.measureStopRate?.()) ?? null;
    await saveFinal(run, evalLossValue, stop);
    return result(run, evalLossValue, t0, tokens);
  } finally {
    cleanup(run);
  }
}

/** Validate the data, attach LoRA, build the optimiser, restore a checkpoint. */
async function setup(opts: TrainOptions): Promise<Run> {
  await initEngine();
  const { hp } = opts;
  const supervisedEot = requireSupervisedEot(opts.rows, opts.eotIds, opts.allowNoEot);
  if (opts.lora) addLora(opts.model, opts.lora, hp.seed + 1);
  const vars = trainableVariables(opts.model);
  const opt = createAdamW(vars);
  const order = new DataOrder(opts.rows, hp.batchSize, hp.seed);
  const schedule = scheduleFor(order, hp);
  const totalSteps = schedule.totalSteps;
  ensureDir(opts.outputDir);
  const fingerprint = fingerprintOf(opts, totalSteps);
  const run: Run = {
    opts,
    vars,
    opt,
    order,
    schedule,
    totalSteps,
    step: 0,
    rng: new Rng(hp.seed + 2),
    fingerprint,
    losses: [],
    supervisedEot,
    resumedFrom: null,
  };
  const found = opts.resume ? findCheckpoint(opts.outputDir, opts.onLog) : null;
  if (opts.resume && !found) {
    disposeAdamW(opt);
    throw new ChatsftError(
      'CHECKPOINT_INVALID',
      'nothing to resume: no complete checkpoint here (set checkpoint_every, or drop --resume to start over)',
      opts.outputDir,
    );
  }
  if (found) {
    let st: TrainerState;
    try {
      st = loadCheckpoint(opts.outputDir, vars, opt, fingerprint);
    } catch (e) {
      disposeAdamW(opt);
      throw e;
    }
    run.step = st.step;
    run.rng = new Rng(Uint32Array.from(st.rngState));
    run.losses = st.losses;
    run.resumedFrom = st.step;
    const torn = truncateMetrics(opts.outputDir, st.step);
    if (torn) opts.onLog?.(torn);
    opts.onLog?.(`resumed from step ${st.step} of ${totalSteps} (${found.dir})`);
  } else {
    fs.rmSync(path.join(opts.outputDir, 'metrics.jsonl'), { force: true });
  }
  return run;
}

/** The optimiser steps, with periodic eval and checkpoints. */
async function train(run: Run): Promise<{ tokens: number; stopped: boolean }> {
  const { opts, order, schedule } = run;
  const { hp } = opts;
  let tokens = 0;
  let stepsThisSession = 0;
  while (run.step < run.totalSteps) {
    if (opts.stopAfterSteps !== undefined && stepsThisSession >= opts.stopAfterSteps) return { tokens, stopped: true };
    const t = performance.now();
    const first = run.step * hp.gradAccum;
    const micro = Array.from({ length: hp.gradAccum }, (_, i) =>
      collate(order.micro(first + i), { padId: opts.padId, paddingSide: opts.paddingSide }),
    );
    const lr = lrAt(schedule, run.step);
    const res = trainStep(
      opts.model,
      micro,
      run.opt,
      lr,
      { ...ADAMW_DEFAULTS, weightDecay: hp.weightDecay, maxGradNorm: hp.maxGradNorm },
      run.rng,
      opts.onStepProgress && ((tick) => opts.onStepProgress!({ ...tick, step: run.step + 1, totalSteps: run.totalSteps })),
    );
    if (!Number.isFinite(res.loss) || !Number.isFinite(res.gradNorm)) {
      throw divergedError({
        step: run.step + 1,
        loss: res.loss,
        gradNorm: res.gradNorm,
        losses: run.losses,
        lr: hp.lr,
        maxGradNorm: hp.maxGradNorm,
        outputDir: opts.outputDir,
      });
    }
    run.step += 1;
    stepsThisSession += 1;
    run.losses.push(res.loss);
    const real = micro.reduce((n, b) => n + realTokens(b), 0);
    tokens += real;
    const seconds = (performance.now() - t) / 1000;
    const every = opts.evalEverySteps ?? 0;
    const evalNow = every > 0 && run.step % every === 0 && run.step < run.totalSteps;
    const ev = evalNow ? evaluate(run) : null;
    const stop = evalNow ? ((await opts.measureStopRate?.()) ?? null) : null;
    const line = {
      step: run.step,
      loss: res.loss,
      lr,
      grad_norm: res.gradNorm,
      tokens: res.tokens,
      tokens_per_s: real / seconds,
      epoch: order.epochOf(first + hp.gradAccum),
      ...(ev !== null ? { eval_loss: ev } : {}),
      ...stopFields(stop),
    };
    appendMetrics(opts.outputDir, line);
    opts.onStep?.({
      step: run.step,
      totalSteps: run.totalSteps,
      loss: res.loss,
      lr,
      gradNorm: res.gradNorm,
      tokens: res.tokens,
      inputTokens: real,
      tokensPerSecond: real / seconds,
      ...(ev !== null ? { evalLoss: ev } : {}),
      ...(stop ? { stopRate: stop.stop_rate } : {}),
    });
    const ck = opts.checkpointEvery ?? 0;
    if (ck > 0 && run.step % ck === 0 && run.step < run.totalSteps) {
      saveCheckpoint(opts.outputDir, run.vars, run.opt, {
        step: run.step,
        microIndex: run.step * hp.gradAccum,
        rngState: run.rng.state(),
        fingerprint: run.fingerprint,
        losses: run.losses,
      });
    }
    // Let a SIGINT/SIGTERM handler run between steps (the step itself is synchronous).
    await new Promise<void>((r) => setImmediate(r));
  }
  return { tokens, stopped: false };
}

/** Mean CE per supervised token over the eval rows, or null without them. */
function evaluate(run: Run): number | null {
  const rows = run.opts.evalRows;
  if (!rows || rows.length === 0) return null;
  let sum = 0;
  let count = 0;
  for (const b of batches(rows, run.opts.hp.batchSize, run.opts.padId, run.opts.paddingSide)) {
    const r = evalLoss(run.opts.model, b);
    sum += r.sum;
    count += r.count;
  }
  return count > 0 ? sum / count : null;
}

/** The output folder: merged weights + config.json, adapter, metrics, loss curve, caller's files; then the last checkpoint. */
async function saveFinal(run: Run, evalLossValue: number | null, stop: StopRateSummary | null): Promise<void> {
  const { opts } = run;
  const dir = opts.outputDir;
  // Streamed tensor by tensor (O(size)); a non-finite weight aborts the write, whose temp file is removed.
  saveModel(
    opts.model,
    dir,
    (name) => {
      const t = mergedTensor(opts.model, name);
      assertFiniteTensors(new Map([[name, { data: t }]]), dir, run.step);
      return t;
    },
    { dtype: opts.saveDtype ?? 'F32' },
  );
  if (opts.model.lora) saveAdapter(opts.model, path.join(dir, 'adapter'), opts.baseModelPath ?? null);
  if (evalLossValue !== null || stop !== null) {
    // The final evaluation belongs to the last step's line.
    const lines = readMetrics(dir);
    const last = lines[lines.length - 1];
    if (last && (last.eval_loss === undefined || last.stop_rate === undefined)) {
      if (evalLossValue !== null && last.eval_loss === undefined) last.eval_loss = evalLossValue;
      if (last.stop_rate === undefined) Object.assign(last, stopFields(stop));
      writeFileAtomic(path.join(dir, 'metrics.jsonl'), lines.map((l) => JSON.stringify(l) + '\n').join(''));
    }
  }
  fs.writeFileSync(path.join(dir, 'loss.svg'), lossCurveSvg(readMetrics(dir)));
  await opts.finalizeFolder?.(dir);
  if ((opts.checkpointEvery ?? 0) > 0) {
    saveCheckpoint(dir, run.vars, run.opt, {
      step: run.step,
      microIndex: run.step * opts.hp.gradAccum,
      rngState: run.rng.state(),
      fingerprint: run.fingerprint,
      losses: run.losses,
    });
  }
}

function cleanup(run: Run): void {
  disposeAdamW(run.opt);
}

function result(run: Run, evalLossValue: number | null, t0: number, tokens: number): TrainResult {
  const seconds = (performance.now() - t0) / 1000;
  return {
    steps: run.step,
    losses: run.losses,
    finalLoss: run.losses[run.losses.length - 1] ?? NaN,
    evalLoss: evalLossValue,
    stopRates: stopRateCurve(readMetrics(run.opts.outputDir)),
    seconds,
    tokensPerSecond: tokens / seconds,
    outputDir: run.opts.outputDir,
    supervisedEot: run.supervisedEot,
    resumedFrom: run.resumedFrom,
  };
}

/** Hash of everything that must match for a checkpoint to be resumable. */
function fingerprintOf(opts: TrainOptions, totalSteps: number): string {
  const h = createHash('sha256');
  const { model } = opts;
  h.update(
    JSON.stringify({
      hp: opts.hp,
      lora: opts.lora ?? null,
      totalSteps,
      padId: opts.padId,
      side: opts.paddingSide,
      config: { ...model.config, raw: undefined },
    }),
  );
  for (const r of opts.rows as Row[]) h.update(Int32Array.from(r.inputIds)).update(Int32Array.from(r.labels));
  return h.digest('hex');
}
