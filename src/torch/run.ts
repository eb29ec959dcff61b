/**
 * `train --engine torch`: the run of src/train/loop.ts with the optimiser
 * steps on PyTorch. This side validates the rows, fixes the data order,
 * learning rates, loss normalisers and initial values (job.ts), launches
 * the worker (one process, or `torch.distributed.run` for --nproc), turns
 * its JSON lines into progress, metrics.jsonl and the loss curve, and
 * finishes the model folder (config.json, tokenizer files, stop ids).
 *
 *   const result = await runTorchTraining({ config, init: { kind: 'seed' }, vocabSize, rows, ..., nproc: 2 });
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { ChatsftError, type ErrorCode } from '../errors.js';
import { ADAMW_DEFAULTS, initialTensors, lrAt, toHfConfig, writeSafetensors, type LlamaConfig } from '../engine/index.js';
import { DataOrder, requireSupervisedEot, scheduleFor } from '../train/data.js';
import { appendMetrics, lossCurveSvg, readMetrics, stopRateCurve, truncateMetrics, type MetricsLine } from '../train/metrics.js';
import { stopFields, type StopEval, type StopFields, type WorkerGeneration } from './stop.js';
import type { TrainOptions, TrainResult } from '../train/types.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { ensureDir } from '../util/fs-errors.js';
import { registerInterruptHook, registerTemp, unregisterTemp } from '../util/temps.js';
import { findCheckpoint } from '../train/checkpoint.js';
import { divergedError } from '../train/diverge.js';
import { loraInitTensors, writePlanFile, writeRowsFile } from './job.js';
import { defaultPython, requireTorch, workerEnv, type TorchInfo } from './python.js';

export const WORKER_LOG = 'torch-worker.log';
const JOB_DIR = '.torch-job';

export interface TorchTrainOptions extends Omit<TrainOptions, 'model'> {
  /** The starting model's config (vocabulary before any resize). */
  config: LlamaConfig;
  /** A pretrained folder (the worker reads its safetensors, sharded or not) or the seeded init of `config`. */
  init: { kind: 'folder'; path: string } | { kind: 'seed' };
  /** Vocabulary after tokens added for the template (rows grown by the mean, as the engine does). */
  vocabSize: number;
  /** Processes (DDP); the global batch is batchSize × nproc. */
  nproc?: number;
  python?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  gradientCheckpointing?: boolean;
  /** auto: bf16 autocast on GPUs that have it, else float32; bf16 forces it (also on the CPU, for tests). */
  precision?: 'auto' | 'float32' | 'bf16';
  /** Called once the worker has loaded the model. */
  onReady?: (info: WorkerReady) => void;
  /** Held-out prompts whose greedy stop rate is measured at every evaluation. */
  stopEval?: StopEval;
}

export interface WorkerReady {
  device: string;
  device_name: string;
  autocast: string | null;
  world_size: number;
  torch: string;
  parameters: number;
  trainable: number;
  gradient_checkpointing: boolean;
  threads: number;
}

export interface TorchTrainResult extends TrainResult {
  engine: 'torch';
  /** Stop rate of the end-of-run evaluation (held-out prompts, greedy), when measured. */
  stop: StopFields | null;
  device: string;
  worldSize: number;
}

type WorkerEvent =
  | ({ event: 'ready' } & WorkerReady)
  | { event: 'resumed'; step: number; losses: number[] }
  | {
      event: 'step';
      step: number;
      loss: number;
      lr: number;
      grad_norm: number;
      seconds: number;
      eval_loss?: number;
      generations?: WorkerGeneration[];
    }
  | { event: 'stopped'; step: number }
  | { event: 'done'; step: number; eval_loss: number | null; generations?: WorkerGeneration[] }
  /** Non-finite loss / grad_norm come as "NaN" / "Infinity" (JSON has no such numbers); `what` names a non-finite weight. */
  | { event: 'diverged'; step: number; loss: number | string; grad_norm: number | string; what?: string }
  | { event: 'error'; code: string; message: string; where?: string };

const WORKER_CODES: readonly ErrorCode[] = [
  'MODEL_INVALID',
  'CHECKPOINT_INVALID',
  'ENGINE_ERROR',
  'DATA_INVALID',
  'CONFIG_INVALID',
  'TRAINING_DIVERGED',
];

export async function runTorchTraining(opts: TorchTrainOptions): Promise<TorchTrainResult> {
  const t0 = performance.now();
  const python = opts.python ?? defaultPython();
  const info = requireTorch(python);
  const { hp } = opts;
  const nproc = opts.nproc ?? 1;
  if (!(Number.isInteger(nproc) && nproc >= 1)) throw new ChatsftError('USAGE', `--nproc must be a positive integer, got ${String(nproc)}`);
  // One GPU per process: more processes than GPUs would fail inside the worker.
  if (info.cuda && opts.device !== 'cpu' && nproc > (info.device_count ?? 1)) {
    throw new ChatsftError(
      'USAGE',
      `--nproc ${nproc} needs ${nproc} GPUs, ${python} sees ${info.device_count ?? 1}; lower --nproc or add --device cpu`,
    );
  }
  const supervisedEot = requireSupervisedEot(opts.rows, opts.eotIds, opts.allowNoEot);

  // The schedule of src/train/loop.ts over global micro-batches of batch × nproc rows.
  const order = new DataOrder(opts.rows, hp.batchSize * nproc, hp.seed);
  const schedule = scheduleFor(order, hp);
  const totalSteps = schedule.totalSteps;
  const lrs = Array.from({ length: totalSteps }, (_, s) => lrAt(schedule, s));

  const out = opts.outputDir;
  ensureDir(out);
  // The same completeness rule as the embedded engine: the newest complete checkpoint, recovered
  // from the siblings an interrupted save left (the worker writes complete.json last).
  const found = opts.resume ? findCheckpoint(out, opts.onLog) : null;
  if (opts.resume && !found)
    throw new ChatsftError(
      'CHECKPOINT_INVALID',
      'nothing to resume: no complete checkpoint here (set checkpoint_every, or drop --resume to start over)',
      out,
    );
  const jobDir = path.join(out, JOB_DIR);
  fs.rmSync(jobDir, { recursive: true, force: true });
  ensureDir(jobDir);
  // The job files are temps of this run: removed at the end, on failure and on an interrupt.
  registerTemp(jobDir);
  try {
    return await trainWithWorker(opts, { t0, python, info, nproc, supervisedEot, order, totalSteps, lrs, out, jobDir, found });
  } finally {
    fs.rmSync(jobDir, { recursive: true, force: true });
    unregisterTemp(jobDir);
  }
}

interface Prepared {
  t0: number;
  python: string;
  info: TorchInfo;
  nproc: number;
  supervisedEot: number;
  order: DataOrder;
  totalSteps: number;
  lrs: number[];
  out: string;
  jobDir: string;
  found: { dir: string; step: number } | null;
}

async function trainWithWorker(opts: TorchTrainOptions, p: Prepared): Promise<TorchTrainResult> {
  const { t0, python, nproc, supervisedEot, order, totalSteps, lrs, out, jobDir, found } = p;
  const { hp } = opts;
  const file = (n: string): string => path.join(jobDir, n);
  writeRowsFile(file('rows.i32'), opts.rows);
  if (opts.evalRows?.length) writeRowsFile(file('eval.i32'), opts.evalRows);
  const plan = writePlanFile(file('plan.i32'), opts.rows, order, totalSteps, hp.gradAccum, opts.padId);
  if (opts.init.kind === 'seed') writeSafetensors(file('init.safetensors'), initialTensors(opts.config, hp.seed));
  const lora = opts.lora ?? null;
  if (lora)
    writeSafetensors(file('lora_init.safetensors'), loraInitTensors({ ...opts.config, vocabSize: opts.vocabSize }, lora, hp.seed + 1));

  const srcDtype = opts.config.raw['torch_dtype'];
  const saveDtype = opts.init.kind === 'folder' && (srcDtype === 'bfloat16' || srcDtype === 'float16') ? srcDtype : 'float32';
  const fingerprint = fingerprintOf(opts, totalSteps, nproc);
  const job = {
    version: 1,
    output_dir: out,
    config: { ...opts.config.raw },
    init:
      opts.init.kind === 'folder'
        ? { kind: 'folder', path: path.resolve(opts.init.path) }
        : { kind: 'file', path: file('init.safetensors') },
    vocab_size: opts.vocabSize,
    rows: file('rows.i32'),
    eval_rows: opts.evalRows?.length ? file('eval.i32') : null,
    plan: file('plan.i32'),
    total_steps: totalSteps,
    grad_accum: hp.gradAccum,
    batch_size: hp.batchSize,
    lrs,
    step_tokens: plan.stepTokens,
    pad_id: opts.padId,
    padding_side: opts.paddingSide,
    lora: lora
      ? {
          r: lora.r,
          alpha: lora.alpha,
          dropout: lora.dropout,
          targets: lora.targets,
          train_token_ids: [...new Set(lora.trainTokenIds)].sort((a, b) => a - b),
          init: file('lora_init.safetensors'),
        }
      : null,
    adamw: { beta1: ADAMW_DEFAULTS.beta1, beta2: ADAMW_DEFAULTS.beta2, eps: ADAMW_DEFAULTS.eps, weight_decay: hp.weightDecay },
    max_grad_norm: hp.maxGradNorm,
    eval_every: opts.evalEverySteps ?? 0,
    checkpoint_every: opts.checkpointEvery ?? 0,
    resume: found !== null,
    fingerprint,
    stop_after_steps: opts.stopAfterSteps ?? null,
    seed: hp.seed,
    device: opts.device ?? 'auto',
    gradient_checkpointing: Boolean(opts.gradientCheckpointing),
    precision: opts.precision ?? 'auto',
    save_dtype: saveDtype,
    threads: Math.max(1, Math.floor(availableParallelism() / nproc)),
    base_model_path: opts.baseModelPath ?? null,
    stop_eval: opts.stopEval?.prompts.length
      ? { prompts: opts.stopEval.prompts, stop_ids: opts.stopEval.stopIds, max_new_tokens: opts.stopEval.maxNewTokens }
      : null,
  };
  writeJsonAtomic(file('job.json'), job);
  // As the embedded loop: a fresh run starts a new metrics file.
  if (!found) fs.rmSync(path.join(out, 'metrics.jsonl'), { force: true });

  const losses: number[] = [];
  let resumedFrom: number | null = null;
  let ready: WorkerReady | null = null;
  let finalEval: number | null = null;
  let finalStop: StopFields | null = null;
  const stopOf = (g: WorkerGeneration[] | undefined): StopFields | null => (g && opts.stopEval ? stopFields(g, opts.stopEval) : null);
  let tokens = 0;
  let stopped = false;
  let diverged: Extract<WorkerEvent, { event: 'diverged' }> | null = null;
  const logFile = path.join(out, WORKER_LOG);
  const args =
    nproc > 1
      ? [...launcherArgs(nproc, await freePort(), file('ranks')), '-m', 'chatsft_worker', file('job.json')]
      : ['-m', 'chatsft_worker', file('job.json')];
  const failure = await runWorker(python, args, logFile, (ev) => {
    switch (ev.event) {
      case 'ready':
        ready = ev;
        opts.onReady?.(ev);
        opts.onLog?.(
          `torch ${ev.torch} on ${ev.device_name}${ev.autocast ? ` (${ev.autocast} autocast)` : ''}, ${ev.world_size} process${ev.world_size > 1 ? 'es' : ''}, ${(ev.trainable / 1e6).toFixed(2)} M of ${(ev.parameters / 1e6).toFixed(2)} M parameters trained`,
        );
        break;
      case 'resumed': {
        resumedFrom = ev.step;
        losses.push(...ev.losses);
        const torn = truncateMetrics(out, ev.step);
        if (torn) opts.onLog?.(torn);
        opts.onLog?.(`resumed from step ${ev.step} of ${totalSteps} (${found?.dir ?? path.join(out, 'checkpoint')})`);
        break;
      }
      case 'step': {
        const s = ev.step - 1;
        losses.push(ev.loss);
        const real = plan.inputTokens[s]!;
        tokens += real;
        const stop = stopOf(ev.generations);
        appendMetrics(out, {
          step: ev.step,
          loss: ev.loss,
          lr: ev.lr,
          grad_norm: ev.grad_norm,
          tokens: plan.stepTokens[s]!,
          tokens_per_s: real / ev.seconds,
          epoch: order.epochOf(ev.step * hp.gradAccum),
          ...(ev.eval_loss !== undefined ? { eval_loss: ev.eval_loss } : {}),
          ...(stop ?? {}),
        } as MetricsLine);
        opts.onStep?.({
          step: ev.step,
          totalSteps,
          loss: ev.loss,
          lr: ev.lr,
          gradNorm: ev.grad_norm,
          tokens: plan.stepTokens[s]!,
          inputTokens: real,
          tokensPerSecond: real / ev.seconds,
          ...(ev.eval_loss !== undefined ? { evalLoss: ev.eval_loss } : {}),
        });
        break;
      }
      case 'stopped':
        stopped = true;
        break;
      case 'done':
        finalEval = ev.eval_loss;
        finalStop = stopOf(ev.generations);
        break;
      case 'diverged':
        diverged = ev;
        break;
      case 'error':
        break;
    }
  });
  const div = diverged as Extract<WorkerEvent, { event: 'diverged' }> | null;
  if (div) {
    // The embedded engine's error (src/train/diverge.ts): step, last finite loss, the checkpoint kept, a hint.
    if (div.what) throw new ChatsftError('TRAINING_DIVERGED', `${div.what}. Try a lower lr or max_grad_norm`, out);
    throw divergedError({
      step: div.step,
      loss: Number(div.loss),
      gradNorm: Number(div.grad_norm),
      losses,
      lr: hp.lr,
      maxGradNorm: hp.maxGradNorm,
      outputDir: out,
    });
  }
  if (failure) throw failure;
  const finished = ready as WorkerReady | null;
  if (!stopped) {
    // The folder: weights came from the worker; config, metrics, curve and tokenizer files from here.
    const config = toHfConfig({ ...opts.config, vocabSize: opts.vocabSize, raw: { ...opts.config.raw, vocab_size: opts.vocabSize } });
    writeJsonAtomic(path.join(out, 'config.json'), { ...config, torch_dtype: saveDtype });
    const stopFinal = finalStop as StopFields | null;
    if (finalEval !== null || stopFinal !== null) {
      // The end-of-run evaluation goes on the last step's line, as the embedded loop does.
      const lines = readMetrics(out);
      const last = lines[lines.length - 1];
      if (last && last.eval_loss === undefined) {
        if (finalEval !== null) last.eval_loss = finalEval;
        if (stopFinal) Object.assign(last, stopFinal);
        fs.writeFileSync(path.join(out, 'metrics.jsonl'), lines.map((l) => JSON.stringify(l) + '\n').join(''));
      }
    }
    fs.writeFileSync(path.join(out, 'loss.svg'), lossCurveSvg(readMetrics(out)));
    await opts.finalizeFolder?.(out);
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    steps: losses.length,
    losses,
    finalLoss: losses[losses.length - 1] ?? NaN,
    evalLoss: stopped ? null : finalEval,
    stopRates: stopRateCurve(readMetrics(out)),
    seconds,
    tokensPerSecond: tokens / seconds,
    outputDir: out,
    supervisedEot,
    resumedFrom,
    engine: 'torch',
    stop: finalStop,
    device: finished?.device ?? 'unknown',
    worldSize: finished?.world_size ?? nproc,
  };
}

/**
 * Spawn the worker, stdout → events, stderr → the log file. Resolves with
 * null on success, or the error to throw: the worker's own (with its code)
 * or a crash, both naming the log.
 */
async function runWorker(
  python: string,
  args: string[],
  logFile: string,
  onEvent: (ev: WorkerEvent) => void,
): Promise<ChatsftError | null> {
  const log = fs.openSync(logFile, 'a');
  fs.writeSync(log, `\n=== ${new Date().toISOString()} ${python} ${args.join(' ')}\n`);
  let errorEvent: { code: string; message: string; where?: string } | null = null;
  let handlerError: unknown = null;
  try {
    // Its own process group (torch.distributed.run and its ranks included), stopped as a whole on an interrupt.
    const child = spawn(python, args, { env: workerEnv(), stdio: ['ignore', 'pipe', log], detached: true });
    const unhook = registerInterruptHook(() => stopGroup(child.pid));
    child.on('close', unhook);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
      child.on('error', (e) => resolve({ code: null, signal: null, spawnError: e }));
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    const rl = readline.createInterface({ input: child.stdout! });
    for await (const line of rl) {
      let ev: WorkerEvent | null = null;
      if (line.startsWith('{')) {
        try {
          ev = JSON.parse(line) as WorkerEvent;
        } catch {
          ev = null;
        }
      }
      if (!ev || typeof ev.event !== 'string') {
        fs.writeSync(log, `${line}\n`); // library chatter on stdout belongs in the log
        continue;
      }
      if (ev.event === 'error') errorEvent = ev;
      if (handlerError) continue;
      try {
        onEvent(ev);
      } catch (e) {
        handlerError = e;
        child.kill('SIGTERM');
      }
    }
    const { code, signal, spawnError } = await exited;
    if (handlerError) throw handlerError;
    if (spawnError) return new ChatsftError('ENGINE_UNAVAILABLE', `cannot start ${python}: ${spawnError.message}`, '--python');
    if (errorEvent) {
      const c = (WORKER_CODES as readonly string[]).includes(errorEvent.code) ? (errorEvent.code as ErrorCode) : 'ENGINE_ERROR';
      return new ChatsftError(c, `${errorEvent.message} (torch worker log: ${logFile})`, errorEvent.where);
    }
    if (code !== 0)
      return new ChatsftError(
        'ENGINE_ERROR',
        `the torch worker ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; see its log: ${logFile}`,
      );
    return null;
  } finally {
    fs.closeSync(log);
  }
}

/**
 * SIGTERM to the worker's process group, then wait (bounded, synchronously:
 * this runs inside the signal handler) until its leader has exited, so the
 * worker has removed its own temps before ours are removed and we exit.
 * The leader is our child, so it stays a zombie until reaped: "exited" is
 * state Z in /proc/PID/stat (or no such process).
 */
function stopGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const exited = (): boolean => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOENT';
    }
  };
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 10_000;
  while (!exited() && Date.now() < deadline) Atomics.wait(sleeper, 0, 0, 20);
  // Still running after 10 s (stuck in a kernel or a collective): it must not outlive us.
  if (!exited()) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * torch.distributed.run on one node, static rendezvous on a free port.
 * `--redirects 2 --tee 2` (ranks' stderr to files under logDir and to our
 * log) rather than the default "0": torch 1.13's Std.from_str("0") returns
 * None on Python ≥ 3.11 (IntFlag iteration skips 0) and the launcher crashes.
 */
export function launcherArgs(nproc: number, port: number, logDir: string): string[] {
  return [
    '-m',
    'torch.distributed.run',
    '--nnodes',
    '1',
    '--nproc_per_node',
    String(nproc),
    '--master_addr',
    '127.0.0.1',
    '--master_port',
    String(port),
    '--log_dir',
    logDir,
    '--redirects',
    '2',
    '--tee',
    '2',
  ];
}

/** A free TCP port on 127.0.0.1 for torch.distributed's rendezvous (several runs may share a machine). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Everything that must match for a torch checkpoint to be resumable (the global batch, not the process count). */
function fingerprintOf(opts: TorchTrainOptions, totalSteps: number, nproc: number): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify({
      engine: 'torch',
      hp: { ...opts.hp, batchSize: opts.hp.batchSize * nproc },
      lora: opts.lora ?? null,
      totalSteps,
      padId: opts.padId,
      side: opts.paddingSide,
      vocab: opts.vocabSize,
      config: { ...opts.config, raw: undefined },
    }),
  );
  for (const r of opts.rows) h.update(Int32Array.from(r.inputIds)).update(Int32Array.from(r.labels));
  return h.digest('hex');
}
