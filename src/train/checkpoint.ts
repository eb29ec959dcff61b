/**
 * Training checkpoints: trainable weights + AdamW moments in
 * `state.safetensors`, and step, data position, RNG state and the metrics
 * so far in `trainer_state.json`. The folder is written beside the old one
 * and swapped in with renames; `complete.json` is written last, so a
 * checkpoint without it is a torn one. A kill between the two renames
 * leaves no `checkpoint/` but complete `checkpoint.tmp-PID` /
 * `checkpoint.old-PID` siblings: `findCheckpoint` picks the newest complete
 * one and puts it back in place.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { ensureDir, userErrorFromOs } from '../util/fs-errors.js';
import { renameWhere } from '../util/atomic.js';
import { assertFiniteTensors } from './diverge.js';
import { pidAlive, registerTemp, unregisterTemp } from '../util/temps.js';
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
/** Written last into a checkpoint folder: its presence means every other file is complete. */
export const COMPLETE_MARKER = 'complete.json';

export function saveCheckpoint(outputDir: string, vars: Map<string, tf.Variable>, opt: AdamWState, state: TrainerState): void {
  const final = path.join(outputDir, CHECKPOINT_DIR);
  const tmp = `${final}.tmp-${process.pid}`;
  const old = `${final}.old-${process.pid}`;
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, v] of vars) {
    tensors.set(`param/${name}`, { shape: [...v.shape], data: v.dataSync() as Float32Array });
    tensors.set(`adam_m/${name}`, { shape: [...v.shape], data: opt.m.get(name)!.dataSync() as Float32Array });
    tensors.set(`adam_v/${name}`, { shape: [...v.shape], data: opt.v.get(name)!.dataSync() as Float32Array });
  }
  // Never checkpoint non-finite weights over the last good checkpoint.
  assertFiniteTensors(tensors, outputDir, state.step);
  fs.rmSync(tmp, { recursive: true, force: true });
  ensureDir(tmp);
  registerTemp(tmp);
  try {
    writeSafetensors(path.join(tmp, 'state.safetensors'), tensors, { adam_step: String(opt.step) });
    fs.writeFileSync(path.join(tmp, 'trainer_state.json'), JSON.stringify(state) + '\n');
    fs.writeFileSync(path.join(tmp, COMPLETE_MARKER), JSON.stringify({ step: state.step }) + '\n');
    if (fs.existsSync(final)) fs.renameSync(final, old);
    try {
      fs.renameSync(tmp, final);
    } catch (e) {
      // Keep the previous checkpoint in place (a failed restore leaves it in .old-PID, which findCheckpoint reads).
      if (fs.existsSync(old) && !fs.existsSync(final)) fs.renameSync(old, final);
      throw e;
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw renameWhere(userErrorFromOs(e, final, true), tmp, final);
  } finally {
    unregisterTemp(tmp);
  }
  fs.rmSync(old, { recursive: true, force: true });
}

/** The step of a complete checkpoint folder, or null (torn, or not a checkpoint). */
function completeStep(dir: string, legacyOk: boolean): number | null {
  const marked = fs.existsSync(path.join(dir, COMPLETE_MARKER));
  // Checkpoints from before the marker were only ever renamed in whole, so `checkpoint/` itself is trusted.
  if (!marked && !(legacyOk && fs.existsSync(path.join(dir, 'state.safetensors')))) return null;
  try {
    const st = JSON.parse(fs.readFileSync(path.join(dir, 'trainer_state.json'), 'utf8')) as Partial<TrainerState>;
    return typeof st.step === 'number' ? st.step : null;
  } catch {
    return null;
  }
}

/**
 * The newest complete checkpoint of a run, moved to `checkpoint/` if an
 * interrupted save left it in a `.tmp-PID` / `.old-PID` sibling; torn or
 * older siblings of dead processes are removed. Null when there is none.
 * `onNote` hears what was repaired.
 */
export function findCheckpoint(outputDir: string, onNote?: (line: string) => void): { dir: string; step: number } | null {
  let names: string[];
  try {
    names = fs.readdirSync(outputDir);
  } catch {
    return null;
  }
  const found: Array<{ name: string; step: number | null }> = [];
  for (const name of names) {
    const m = /^checkpoint\.(?:tmp|old)-(\d+)$/.exec(name);
    if (name !== CHECKPOINT_DIR && !(m && !pidAlive(Number(m[1])))) continue;
    found.push({ name, step: completeStep(path.join(outputDir, name), name === CHECKPOINT_DIR) });
  }
  let best: { name: string; step: number } | null = null;
  for (const f of found) {
    if (f.step === null) continue;
    if (!best || f.step > best.step || (f.step === best.step && f.name === CHECKPOINT_DIR)) best = { name: f.name, step: f.step };
  }
  const final = path.join(outputDir, CHECKPOINT_DIR);
  if (best && best.name !== CHECKPOINT_DIR) {
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(path.join(outputDir, best.name), final);
    onNote?.(`recovered the step-${best.step} checkpoint an interrupted save left in ${best.name}`);
  }
  for (const f of found) {
    if (f.name === CHECKPOINT_DIR || (best && f.name === best.name)) continue;
    fs.rmSync(path.join(outputDir, f.name), { recursive: true, force: true });
    onNote?.(`removed ${f.step === null ? 'a torn' : 'an older'} checkpoint left by an interrupted save (${f.name})`);
  }
  return best ? { dir: final, step: best.step } : null;
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
    throw new ChatsftError(
      'CHECKPOINT_INVALID',
      'checkpoint belongs to a run with different data, model or hyper-parameters; use a new output_dir or drop --resume',
      dir,
    );
  }
  const { tensors, metadata } = readSafetensors(path.join(dir, 'state.safetensors'));
  for (const [name, v] of vars) {
    for (const [prefix, target] of [
      ['param', v],
      ['adam_m', opt.m.get(name)!],
      ['adam_v', opt.v.get(name)!],
    ] as const) {
      const t = tensors.get(`${prefix}/${name}`);
      if (!t || t.shape.join(',') !== v.shape.join(','))
        throw new ChatsftError('CHECKPOINT_INVALID', `missing or mis-shaped ${prefix}/${name}`, dir);
      tf.tidy(() => target.assign(tf.tensor(t.data, t.shape)));
    }
  }
  opt.step = Number(metadata['adam_step'] ?? state.step);
  return state;
}
