/**
 * AdamW with decoupled weight decay (PyTorch's update order), learning-rate
 * schedules and global-norm gradient clipping.
 */
import { tf, variableFrom } from './backend.js';
import { ChatsftError } from '../errors.js';

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWOptions, 'lr'> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

export interface AdamWState {
  step: number;
  /** Per variable name: first and second moments, HF-independent internal layout. */
  m: Map<string, tf.Variable>;
  v: Map<string, tf.Variable>;
}

/** No decay on norms, biases and other 1-D parameters (as HF Trainer does). */
export function decays(name: string, v: tf.Tensor): boolean {
  return v.rank >= 2 && !name.endsWith('.bias') && !name.includes('norm');
}

export function createAdamW(vars: Map<string, tf.Variable>): AdamWState {
  const m = new Map<string, tf.Variable>();
  const v = new Map<string, tf.Variable>();
  for (const [name, p] of vars) {
    m.set(name, variableFrom(tf.zerosLike(p), false));
    v.set(name, variableFrom(tf.zerosLike(p), false));
  }
  return { step: 0, m, v };
}

export function disposeAdamW(s: AdamWState): void {
  for (const t of s.m.values()) t.dispose();
  for (const t of s.v.values()) t.dispose();
}

/**
 * One AdamW update with learning rate `lr` (the schedule's value for this
 * step): p ← p·(1 − lr·wd); p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε).
 */
export function adamWUpdate(
  vars: Map<string, tf.Variable>,
  grads: Map<string, tf.Tensor>,
  state: AdamWState,
  lr: number,
  o: Omit<AdamWOptions, 'lr'>,
): void {
  state.step += 1;
  const bc1 = 1 - Math.pow(o.beta1, state.step);
  const bc2 = 1 - Math.pow(o.beta2, state.step);
  for (const [name, p] of vars) {
    const g = grads.get(name);
    if (!g) throw new ChatsftError('ENGINE_ERROR', `no gradient for ${name}`);
    const m = state.m.get(name)!;
    const v = state.v.get(name)!;
    tf.tidy(() => {
      const m1 = tf.add(tf.mul(m, o.beta1), tf.mul(g, 1 - o.beta1));
      const v1 = tf.add(tf.mul(v, o.beta2), tf.mul(tf.square(g), 1 - o.beta2));
      m.assign(m1);
      v.assign(v1);
      const decayed = o.weightDecay > 0 && decays(name, p) ? tf.mul(p, 1 - lr * o.weightDecay) : p;
      const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(bc2)), o.eps);
      p.assign(tf.sub(decayed, tf.mul(tf.div(m1, denom), lr / bc1)));
    });
  }
}

/** Global L2 norm of all gradients. */
export function globalNorm(grads: Iterable<tf.Tensor>): number {
  let sq = 0;
  for (const g of grads) sq += tf.tidy(() => tf.sum(tf.square(g)).dataSync()[0]!);
  return Math.sqrt(sq);
}

/** Scale gradients in place so their global norm is at most maxNorm; returns the norm before clipping. */
export function clipGradients(grads: Map<string, tf.Tensor>, maxNorm: number): number {
  const norm = globalNorm(grads.values());
  if (maxNorm > 0 && norm > maxNorm) {
    const s = maxNorm / (norm + 1e-6);
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, s));
      g.dispose();
    }
  }
  return norm;
}

export interface Schedule {
  kind: 'cosine' | 'constant' | 'linear';
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Floor of the cosine/linear decay, as a fraction of lr (default 0). */
  minLrRatio?: number;
}

/** Learning rate for optimiser step `step` (0-based): linear warmup, then the decay. */
export function lrAt(s: Schedule, step: number): number {
  if (s.warmupSteps > 0 && step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  if (s.kind === 'constant') return s.lr;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  const floor = s.minLrRatio ?? 0;
  const f = s.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return s.lr * (floor + (1 - floor) * f);
}
