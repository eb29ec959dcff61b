/**
 * Training checkpoints: trainable weights + AdamW moments in
 * `state.safetensors`, and step, data position, RNG state and the metrics
 * so far in `trainer_state.json`. The folder is written beside the old one
 * and swapped in with renames, so a kill never leaves a half checkpoint.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { readSafetensors, tf, writeSafetensors, type AdamWState } from '../engine/index.js';

export interface TrainerState {
  step: number;
  /** Global micro-batch index of the next step. */
  microIndex: number;
  rngState: number[];
  /** Identifies the run's settings; a checkpoint of another run is refused. */
  fingerprint: string;
  losses: number[];
}

export const CHECKPOINT_DIR = 'checkpoint';

export function saveCheckpoint(outputDir: string, vars: Map<string, tf.Variable>, opt: AdamWState, state: TrainerState): void {
  const final = path.join(outputDir, CHECKPOINT_DIR);
  const tmp = `${final}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, v] of vars) {
    tensors.set(`param/${name}`, { shape: [...v.shape], data: v.dataSync() as Float32Array });
    tensors.set(`adam_m/${name}`, { shape: [...v.shape], data: opt.m.get(name)!.dataSync() as Float32Array });
    tensors.set(`adam_v/${name}`, { shape: [...v.shape], data: opt.v.get(name)!.dataSync() as Float32Array });
  }
  writeSafetensors(path.join(tmp, 'state.safetensors'), tensors, { adam_step: String(opt.step) });
  fs.writeFileSync(path.join(tmp, 'trainer_state.json'), JSON.stringify(state) + '\n');
  const old = `${final}.old-${process.pid}`;
  if (fs.existsSync(final)) fs.renameSync(final, old);
  fs.renameSync(tmp, final);
  fs.rmSync(old, { recursive: true, force: true });
}

export function hasCheckpoint(outputDir: string): boolean {
  return fs.existsSync(path.join(outputDir, CHECKPOINT_DIR, 'trainer_state.json'));
}

/** Restore weights and optimiser state in place; returns the trainer state. */
export function loadCheckpoint(outputDir: string, vars: Map<string, tf.Variable>, opt: AdamWState, fingerprint: string): TrainerState {
  const dir = path.join(outputDir, CHECKPOINT_DIR);
  const where = path.join(dir, 'trainer_state.json');
  let state: TrainerState;
  try {
    state = JSON.parse(fs.readFileSync(where, 'utf8')) as TrainerState;
  } catch (e) {
    throw new ChatsftError('CHECKPOINT_INVALID', `cannot read trainer state (${(e as Error).message})`, where);
  }
  if (state.fingerprint !== fingerprint) {
    throw new ChatsftError('CHECKPOINT_INVALID', 'checkpoint belongs to a run with different data, model or hyper-parameters; use a new output_dir or drop --resume', dir);
  }
  const { tensors, metadata } = readSafetensors(path.join(dir, 'state.safetensors'));
  for (const [name, v] of vars) {
    for (const [prefix, target] of [['param', v], ['adam_m', opt.m.get(name)!], ['adam_v', opt.v.get(name)!]] as const) {
      const t = tensors.get(`${prefix}/${name}`);
      if (!t || t.shape.join(',') !== v.shape.join(',')) throw new ChatsftError('CHECKPOINT_INVALID', `missing or mis-shaped ${prefix}/${name}`, dir);
      tf.tidy(() => target.assign(tf.tensor(t.data, t.shape)));
    }
  }
  opt.step = Number(metadata['adam_step'] ?? state.step);
  return state;
}
