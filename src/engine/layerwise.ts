/**
 * Gradients with per-layer recomputation (gradient checkpointing): the
 * forward keeps only each decoder layer's input x_l [B·T, d]; the backward
 * walks the layers from the top, re-running layer l's forward on a tape
 * (with the same LoRA dropout masks) to get the vector-Jacobian product
 * with the incoming gradient. Activations alive at once are one layer's,
 * and a host-offloaded layer's weights are uploaded twice per micro-batch
 * (forward, then recompute + backward) and freed in between.
 *
 *   embed ─x0→ layer 0 ─x1→ … ─xL→ norm + head + loss
 *   backward: dL/dxL (head stage) → layer L-1 … 0 (recompute, vjp) → embedding
 *
 * Same numbers as the taped path (accumulateGradients), up to float
 * reassociation.
 */
import { tf } from './backend.js';
import type { Batch } from '../batch/types.js';
import { batchInputs, decoderLayer, embedIds, headTrainable, headWeights, lossChunk, rmsNorm, supervisedTargets } from './forward.js';
import { gatherRows, headLossWithGrad } from './ops.js';
import { trainableVariables } from './lora.js';
import { Rng } from './rng.js';
import type { LlamaModel } from './types.js';
import { withLayer } from './weights.js';

/** tfjs's engine.gradients: vjp of f at xs with cotangent dy (null entries where f does not depend on x). */
function vjp(f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor): { value: tf.Tensor; grads: (tf.Tensor | undefined)[] } {
  type Grads = (
    f: () => tf.Tensor,
    xs: tf.Tensor[],
    dy?: tf.Tensor,
    allowNoGradients?: boolean,
  ) => { value: tf.Tensor; grads: (tf.Tensor | undefined)[] };
  const engine = tf.engine() as unknown as { gradients: Grads };
  return engine.gradients(f, xs, dy, true);
}

/** Trainable variables grouped by stage: layer index, or -1 (embedding, final norm, head). */
function groupByLayer(vars: Map<string, tf.Variable>): Map<number, [string, tf.Variable][]> {
  const out = new Map<number, [string, tf.Variable][]>();
  for (const [n, v] of vars) {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    const l = m ? Number(m[1]) : -1;
    out.set(l, [...(out.get(l) ?? []), [n, v]]);
  }
  return out;
}

function addInto(acc: Map<string, tf.Tensor>, name: string, g: tf.Tensor | undefined): void {
  if (!g) return;
  const prev = acc.get(name);
  if (!prev) {
    acc.set(name, g);
    return;
  }
  acc.set(name, tf.add(prev, g));
  prev.dispose();
  g.dispose();
}

/**
 * Summed gradients of (summed CE × scale) for one micro-batch, accumulated
 * into `acc` (keyed like trainableVariables); returns the loss value.
 * `onLayer` is called as each decoder layer starts, forward (layer 1..L)
 * then backward (L..1), with the 1-based layer number.
 */
export function microBatchGradients(
  model: LlamaModel,
  batch: Batch,
  scale: number,
  acc: Map<string, tf.Tensor>,
  rng?: Rng,
  onLayer?: (phase: 'forward' | 'backward', layer: number) => void,
): number {
  const c = model.config;
  const groups = groupByLayer(trainableVariables(model));
  const { rows, targets } = supervisedTargets(batch);
  const { cos, sin, bias } = batchInputs(model, batch);
  const inp = { B: batch.batchSize, T: batch.seqLen, cos, sin };
  const xs: tf.Tensor2D[] = [];
  // Dropout masks are drawn from rng in the forward; the recompute replays them.
  const rngAt: number[][] = [];
  const opts = (r?: Rng) => ({ training: true, ...(r ? { rng: r } : {}) });
  try {
    xs.push(tf.tidy(() => embedIds(model, batch.inputIds)));
    for (let l = 0; l < c.numHiddenLayers; l++) {
      onLayer?.('forward', l + 1);
      rngAt.push(rng ? rng.state() : []);
      const x = xs[l]!;
      xs.push(withLayer(model, l, () => tf.tidy(() => decoderLayer(model, l, x, inp, bias, opts(rng)))));
    }
    // Head stage: loss and dL/dxL (+ head/norm/embedding-as-head gradients).
    const head = groups.get(-1) ?? [];
    const xL = xs[c.numHiddenLayers]!;
    let lossValue = 0;
    let dy: tf.Tensor | undefined;
    if (rows.length > 0) {
      const { value, grads } = vjp(() => {
        const h = rmsNorm(xL, model.params.get('model.norm.weight')!, c.rmsNormEps) as tf.Tensor2D;
        const hs = gatherRows(h, tf.tensor1d(rows, 'int32'));
        const { w, wT } = headWeights(model);
        return tf.mul(headLossWithGrad(hs, w, wT, targets, lossChunk(c.vocabSize), headTrainable(model)), scale);
      }, [xL, ...head.map(([, v]) => v)]);
      lossValue = value.dataSync()[0]!;
      value.dispose();
      dy = grads[0];
      head.forEach(([n], i) => addInto(acc, n, grads[i + 1]));
    }
    if (!dy) return lossValue; // nothing supervised: zero gradients
    for (let l = c.numHiddenLayers - 1; l >= 0; l--) {
      onLayer?.('backward', l + 1);
      const vars = groups.get(l) ?? [];
      const x = xs[l]!;
      const replay = rng ? new Rng(Uint32Array.from(rngAt[l]!)) : undefined;
      const g: tf.Tensor = dy;
      const { value, grads }: { value: tf.Tensor; grads: (tf.Tensor | undefined)[] } = withLayer(model, l, () =>
        vjp(() => decoderLayer(model, l, x, inp, bias, opts(replay)), [x, ...vars.map(([, v]) => v)], g),
      );
      value.dispose();
      g.dispose();
      vars.forEach(([n], i) => addInto(acc, n, grads[i + 1]));
      dy = grads[0];
      xs[l + 1]!.dispose();
      if (!dy) return lossValue;
    }
    // Embedding stage (full fine-tuning, or LoRA's trained token rows).
    const emb = head.filter(([n]) => n === 'model.embed_tokens.weight' || n === 'model.embed_tokens.trainable_rows');
    if (emb.length > 0) {
      const g = dy;
      const { value, grads } = vjp(
        () => embedIds(model, batch.inputIds),
        emb.map(([, v]) => v),
        g,
      );
      value.dispose();
      emb.forEach(([n], i) => addInto(acc, n, grads[i]));
    }
    dy.dispose();
    return lossValue;
  } finally {
    tf.dispose([...xs, cos, sin, bias]);
  }
}
