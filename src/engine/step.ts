/**
 * One optimiser step over gradient-accumulation micro-batches. The loss is
 * normalised by the supervised tokens of the whole step (not a mean of
 * per-micro-batch means), so batch 8 × accum 1 and batch 1 × accum 8 give
 * the same gradients.
 */
import { tf } from './backend.js';
import type { Batch } from '../batch/types.js';
import { countSupervised, lossForGrad } from './forward.js';
import { trainableVariables } from './lora.js';
import { adamWUpdate, clipGradients, type AdamWOptions, type AdamWState } from './optim.js';
import type { Rng } from './rng.js';
import type { LlamaModel, OnStepTick } from './types.js';
import { microBatchGradients } from './layerwise.js';

export interface GradResult {
  /** Summed gradients of (summed CE / step tokens), keyed like trainableVariables. */
  grads: Map<string, tf.Tensor>;
  /** Mean CE per supervised token over the step. */
  loss: number;
  tokens: number;
}

/** Gradients of the step's token-normalised loss; caller disposes `grads`. `onTick` reports progress inside the step. */
export function accumulateGradients(model: LlamaModel, micro: Batch[], rng?: Rng, onTick?: OnStepTick): GradResult {
  const vars = trainableVariables(model);
  const names = [...vars.keys()];
  const varList = [...vars.values()];
  const tokens = micro.reduce((n, b) => n + countSupervised(b), 0);
  const scale = 1 / Math.max(1, tokens);
  if (model.gradientCheckpointing || (model.host?.size ?? 0) > 0) {
    const acc = new Map<string, tf.Tensor>();
    let loss = 0;
    const layers = model.config.numHiddenLayers;
    micro.forEach((batch, i) => {
      const at = { micro: i + 1, micros: micro.length };
      onTick?.({ ...at, phase: 'micro' });
      loss += microBatchGradients(model, batch, scale, acc, rng, onTick && ((phase, layer) => onTick({ ...at, phase, layer, layers })));
    });
    // A parameter that does not reach the loss gets no entry: zeros.
    const grads = new Map<string, tf.Tensor>();
    for (const n of names) grads.set(n, acc.get(n) ?? tf.zerosLike(vars.get(n)!));
    return { grads, loss, tokens };
  }
  let acc: tf.Tensor[] | null = null;
  let loss = 0;
  for (const [i, batch] of micro.entries()) {
    onTick?.({ micro: i + 1, micros: micro.length, phase: 'micro' });
    const prev: tf.Tensor[] | null = acc;
    const res: { value: tf.Scalar; summed: tf.Tensor[] } = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => lossForGrad(model, batch, scale, { training: true, rng }).loss, varList);
      // A parameter that does not reach the loss gets no entry: zeros.
      const gs = varList.map((v) => grads[v.name] ?? tf.zerosLike(v));
      return { value, summed: prev ? gs.map((g, i) => tf.add(prev[i]!, g)) : gs };
    });
    loss += res.value.dataSync()[0]!;
    res.value.dispose();
    prev?.forEach((t) => t.dispose());
    acc = res.summed;
  }
  const grads = new Map<string, tf.Tensor>();
  names.forEach((n, i) => grads.set(n, acc![i]!));
  return { grads, loss, tokens };
}

export interface StepResult {
  loss: number;
  tokens: number;
  gradNorm: number;
}

/** accumulate → clip → AdamW update; no tensors outlive the call. */
export function trainStep(
  model: LlamaModel,
  micro: Batch[],
  opt: AdamWState,
  lr: number,
  hp: Omit<AdamWOptions, 'lr'> & { maxGradNorm: number },
  rng?: Rng,
  onTick?: OnStepTick,
): StepResult {
  const { grads, loss, tokens } = accumulateGradients(model, micro, rng, onTick);
  try {
    const gradNorm = clipGradients(grads, hp.maxGradNorm);
    adamWUpdate(trainableVariables(model), grads, opt, lr, hp);
    return { loss, tokens, gradNorm };
  } finally {
    for (const g of grads.values()) g.dispose();
  }
}
