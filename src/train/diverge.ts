/**
 * Divergence: a non-finite loss or gradient norm ends the run (it would
 * otherwise be saved as a model of NaNs), and no non-finite weight is ever
 * written. The last good checkpoint, if any, stays in place.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { CHECKPOINT_DIR, COMPLETE_MARKER } from './checkpoint.js';

function lastCheckpointStep(outputDir: string): number | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(outputDir, CHECKPOINT_DIR, COMPLETE_MARKER), 'utf8')) as { step?: unknown };
    return typeof m.step === 'number' ? m.step : null;
  } catch {
    return null;
  }
}

/** The error for a step whose loss or gradient norm is not finite. */
export function divergedError(o: {
  step: number;
  loss: number;
  gradNorm: number;
  losses: number[];
  lr: number;
  maxGradNorm: number;
  outputDir: string;
}): ChatsftError {
  let lastFinite: { step: number; loss: number } | null = null;
  for (let i = o.losses.length - 1; i >= 0; i--) {
    const l = o.losses[i] as number;
    if (Number.isFinite(l)) {
      lastFinite = { step: i + 1, loss: l };
      break;
    }
  }
  const ck = lastCheckpointStep(o.outputDir);
  const what = Number.isFinite(o.loss) ? `gradient norm ${o.gradNorm}` : `loss ${o.loss}`;
  return new ChatsftError(
    'TRAINING_DIVERGED',
    `training diverged at step ${o.step}: ${what}` +
      `${lastFinite ? ` (last finite loss ${lastFinite.loss.toFixed(4)} at step ${lastFinite.step})` : ''}. ` +
      `${ck !== null ? `The last good checkpoint (step ${ck}) is kept in ${path.join(o.outputDir, CHECKPOINT_DIR)}` : 'No model was saved'}. ` +
      `Try a lower lr (now ${o.lr}) or max_grad_norm (now ${o.maxGradNorm}), or more warmup_steps`,
    o.outputDir,
  );
}

/** Refuse to write weights with a NaN or infinity (the first offending tensor is named). */
export function assertFiniteTensors(tensors: Map<string, { data: ArrayLike<number> }>, where: string, step: number): void {
  for (const [name, t] of tensors) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i] as number)) {
        throw new ChatsftError(
          'TRAINING_DIVERGED',
          `training diverged by step ${step}: weight ${name} has a non-finite value, so no model is written. Try a lower lr or max_grad_norm`,
          where,
        );
      }
    }
  }
}
