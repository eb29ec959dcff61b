/**
 * Differentiable building blocks with hand-written gradients. On tfjs-wasm
 * only plain 2-D products (no transpose flags, batch 1) run on XNNPACK's fast
 * path, and `gather`'s gradient kernel (UnsortedSegmentSum) is missing, so
 * the backward passes here transpose explicitly and scatter with ScatterNd.
 */
import { tf } from './backend.js';

type T2 = tf.Tensor2D;

/** tf.customGrad with typed inputs: f gets the input tensors and save(). */
export function custom<T extends tf.Tensor>(
  f: (inputs: tf.Tensor[], save: tf.GradSaveFunc) => { value: T; gradFunc: (dy: T, saved: tf.Tensor[]) => tf.Tensor[] },
): (...xs: tf.Tensor[]) => T {
  type Fn = Parameters<typeof tf.customGrad>[0];
  const g = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    return f(args as tf.Tensor[], save);
  }) as unknown as Fn);
  return (...xs: tf.Tensor[]) => g(...xs) as T;
}

/**
 * y = x @ w with x [N, in], w [in, out] (weights are kept input-major inside
 * the engine so the forward product needs no transpose).
 */
export const linear = custom<T2>(([x, w], save) => {
  save([x!, w!]);
  return {
    value: tf.matMul(x as T2, w as T2),
    gradFunc: (dy, saved) => {
      const [sx, sw] = saved as [T2, T2];
      // dx [N, in] = dy [N, out] @ wᵀ [out, in]; dw [in, out] = xᵀ [in, N] @ dy [N, out]
      return [tf.matMul(dy, tf.transpose(sw)), tf.matMul(tf.transpose(sx), dy)];
    },
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;

/**
 * y = x @ w for a frozen w (LoRA's base weights, host-offloaded layers): the
 * backward computes only dx = dy @ wᵀ, not the [in, out] dw that nothing
 * would use (it costs as much as dx). `wT` [out, in] is used when given,
 * else wᵀ is made in the backward.
 */
export function linearFrozen(x: tf.Tensor2D, w: tf.Tensor2D, wT: tf.Tensor2D | null): tf.Tensor2D {
  const op = custom<T2>(([xx], save) => {
    // Non-input tensors the backward needs go through save() (see constMatMul).
    save([wT ?? w]);
    return {
      value: tf.matMul(xx as T2, w),
      // Without wT: dx = (w @ dyᵀ)ᵀ, so the product's packed operand is dyᵀ [out, N] (small)
      // instead of a fresh [out, in] transpose of the weight re-packed on every call.
      gradFunc: (dy, saved) => [wT ? tf.matMul(dy, saved[0] as T2) : (tf.transpose(tf.matMul(saved[0] as T2, tf.transpose(dy))) as T2)],
    };
  });
  return op(x);
}

/**
 * Row gather out [M, d] = table [R, d] rows `idx` [M]; the gradient
 * scatter-adds dy into a zero [R, d] (ScatterNd sums duplicate indices).
 */
export function gatherRows(table: tf.Tensor2D, idx: tf.Tensor1D): tf.Tensor2D {
  const op = custom<T2>(([t], save) => {
    save([idx]);
    return {
      value: tf.gather(t!, idx) as T2,
      gradFunc: (dy, saved) => [tf.scatterND(tf.reshape(saved[0]!, [-1, 1]), dy, table.shape)],
    };
  });
  return op(table) as tf.Tensor2D;
}

/**
 * Scaled-dot-product attention for one layer. The products run per
 * (batch, head) as plain 2-D matMuls (XNNPACK's fast path); everything
 * elementwise (bias, softmax and its backward) runs once on the
 * concatenated [B·H, T, S] blocks, so the kernel count stays ≈ 6·B·H.
 * q [B, H, T, hd], k/v [B, KV, S, hd] (H a multiple of KV: grouped-query),
 * bias [B, T, S] additive mask (0 or -1e9). Returns [B, H, T, hd].
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor3D): tf.Tensor4D {
  const [B, H, T, hd] = q.shape;
  const KV = k.shape[1];
  const S = k.shape[2];
  const rep = H / KV;
  const scale = 1 / Math.sqrt(hd);
  const kvOf = (i: number): number => Math.floor(i / H) * KV + Math.floor((i % H) / rep);
  const tr = (x: tf.Tensor): tf.Tensor => tf.transpose(x, [0, 2, 1]);
  const op = custom<tf.Tensor4D>(([qq, kk, vv], save) => {
    // q is pre-scaled by 1/√hd once, instead of scaling every [T, S] block.
    const q3 = tf.reshape(tf.mul(qq!, scale), [B * H, T, hd]);
    const k3 = tf.reshape(kk!, [B * KV, S, hd]);
    const v3 = tf.reshape(vv!, [B * KV, S, hd]);
    const qs = tf.unstack(q3) as T2[];
    const kTs = tf.unstack(tr(k3)) as T2[]; // [hd, S] each
    const vs = tf.unstack(v3) as T2[];
    const scores = qs.map((qi, i) => tf.matMul(qi, kTs[kvOf(i)]!)); // [T, S] each
    const s4 = tf.add(tf.reshape(tf.concat(scores, 0), [B, H, T, S]), tf.expandDims(bias, 1));
    const p = tf.reshape(tf.softmax(s4), [B * H, T, S]);
    const ps = tf.unstack(p) as T2[];
    const outs = ps.map((pi, i) => tf.matMul(pi, vs[kvOf(i)]!)); // [T, hd] each
    const value = tf.reshape(tf.concat(outs, 0), [B, H, T, hd]) as tf.Tensor4D;
    // customGrad runs the forward inside tidy: what the backward needs goes through save().
    save([q3, k3, v3, p]);
    return {
      value,
      gradFunc: (dy, saved) => {
        const [sq, sk, sv, sp] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor3D];
        const dys = tf.unstack(tf.reshape(dy, [B * H, T, hd])) as T2[];
        const pTs = tf.unstack(tr(sp)) as T2[]; // [S, T]
        const vTs = tf.unstack(tr(sv)) as T2[]; // [hd, S]
        const dvs = dys.map((g, i) => tf.matMul(pTs[i]!, g)); // [S, hd], per query head
        const dps = dys.map((g, i) => tf.matMul(g, vTs[kvOf(i)]!)); // [T, S]
        const dp = tf.reshape(tf.concat(dps, 0), [B * H, T, S]);
        // softmax backward: ds = p ⊙ (dp − rowsum(dp ⊙ p))
        const ds = tf.mul(sp, tf.sub(dp, tf.sum(tf.mul(dp, sp), -1, true)));
        const dss = tf.unstack(ds) as T2[];
        const dsTs = tf.unstack(tr(ds)) as T2[];
        const ks = tf.unstack(sk) as T2[];
        const qs2 = tf.unstack(sq) as T2[];
        const dq = dss.map((d, i) => tf.matMul(d, ks[kvOf(i)]!)); // [T, hd], ∂/∂(scaled q)
        const dk = dsTs.map((d, i) => tf.matMul(d, qs2[i]!)); // [S, hd]; q already carries the scale
        // Query heads sharing a kv head: sum their [S, hd] blocks (h = kv·rep + r).
        const group = (parts: tf.Tensor[]): tf.Tensor =>
          rep === 1 ? tf.reshape(tf.concat(parts, 0), [B, KV, S, hd]) : tf.sum(tf.reshape(tf.concat(parts, 0), [B, KV, rep, S, hd]), 2);
        return [tf.mul(tf.reshape(tf.concat(dq, 0), [B, H, T, hd]), scale), group(dk), group(dvs)];
      },
    };
  });
  return op(q, k, v);
}

/**
 * Summed cross-entropy of `h` [M, d] through the head `w` [d, V] against
 * `targets` [M], in row chunks so at most [chunk, V] logits exist at once.
 * The gradient is computed during the forward pass (softmax − onehot is all
 * the backward needs), which is what keeps the chunks from being held on
 * the tape; `wT` is the head as [V, d] for dh.
 */
export function headLossWithGrad(
  h: tf.Tensor2D,
  w: tf.Tensor2D,
  wT: tf.Tensor2D | null,
  targets: Int32Array,
  chunk: number,
  trainHead = true,
): tf.Scalar {
  const [M, d] = h.shape;
  const V = w.shape[1];
  const op = custom<tf.Scalar>(([hh, ww], save) => {
    let loss: tf.Tensor = tf.scalar(0);
    const dhs: tf.Tensor[] = [];
    let dw: tf.Tensor | null = null;
    for (let r0 = 0; r0 < M; r0 += chunk) {
      const n = Math.min(chunk, M - r0);
      const hc = tf.slice(hh!, [r0, 0], [n, d]) as T2;
      const res: { l: tf.Tensor; dh: tf.Tensor; dw?: tf.Tensor } = tf.tidy(() => {
        const logits = tf.matMul(hc, ww as T2); // [n, V]
        const m = tf.max(logits, 1, true); // [n, 1]
        const e = tf.exp(tf.sub(logits, m)); // [n, V]
        const z = tf.sum(e, 1, true); // [n, 1]
        const lse = tf.add(m, tf.log(z)); // [n, 1]
        // Target logits and probabilities by flat index r·V + y, not a [n, V] one-hot.
        const flat = tf.tensor1d(
          Int32Array.from(targets.subarray(r0, r0 + n), (y, r) => r * V + y),
          'int32',
        );
        const l = tf.sub(tf.sum(lse), tf.sum(tf.gather(tf.reshape(logits, [-1]), flat)));
        const p = tf.div(e, z) as T2; // softmax [n, V]
        // dlogits = softmax − onehot: subtract 1 at the n target entries only.
        const at = tf.tensor2d(pairs(targets.subarray(r0, r0 + n)), [n, 2], 'int32');
        const dlogits = tf.tensorScatterUpdate(p, at, tf.sub(tf.gather(tf.reshape(p, [-1]), flat), 1)) as T2;
        // Without wT (a frozen [d, V] head): dhᵀ = w @ dlogitsᵀ, with no [V, d] copy of the head.
        const dh = wT ? tf.matMul(dlogits, wT) : tf.transpose(tf.matMul(ww as T2, tf.transpose(dlogits)));
        return trainHead ? { l, dh, dw: tf.matMul(tf.transpose(hc), dlogits) } : { l, dh };
      });
      const newLoss = tf.add(loss, res.l);
      loss.dispose();
      res.l.dispose();
      loss = newLoss;
      if (res.dw === undefined) {
        // frozen head: no dW
      } else if (dw === null) dw = res.dw;
      else {
        const newDw: tf.Tensor = tf.add(dw, res.dw);
        dw.dispose();
        res.dw.dispose();
        dw = newDw;
      }
      dhs.push(res.dh);
    }
    const dh = dhs.length === 1 ? dhs[0]! : tf.concat(dhs, 0);
    save(dw ? [dh, dw] : [dh]);
    return {
      value: loss as tf.Scalar,
      gradFunc: (dy, saved) => [tf.mul(saved[0]!, dy), saved[1] ? tf.mul(saved[1], dy) : tf.zeros([d, V])],
    };
  });
  return op(h, w) as tf.Scalar;
}

/** [r, y] index pairs [n·2] for targets y of rows r = 0..n-1. */
function pairs(targets: Int32Array): Int32Array {
  const out = new Int32Array(targets.length * 2);
  targets.forEach((y, r) => {
    out[2 * r] = r;
    out[2 * r + 1] = y;
  });
  return out;
}

/**
 * x @ r for a constant square matrix r (no gradient for r): dx = dy @ rᵀ,
 * with rᵀ given. Used for RoPE's rotate_half as a signed permutation, which
 * on wasm is far cheaper than split + concat on the last axis.
 */
export function constMatMul(x: tf.Tensor2D, r: tf.Tensor2D, rT: tf.Tensor2D): tf.Tensor2D {
  // rT goes through save(): tensors captured by closure are disposed before backprop.
  const op = custom<T2>(([xx], save) => {
    save([rT]);
    return { value: tf.matMul(xx as T2, r), gradFunc: (dy, saved) => [tf.matMul(dy, saved[0] as T2)] };
  });
  return op(x);
}

/** Summed cross-entropy without gradients, chunked (eval). */
export function headLoss(h: tf.Tensor2D, w: tf.Tensor2D, targets: Int32Array, chunk: number): number {
  const [M, d] = h.shape;
  const V = w.shape[1];
  let total = 0;
  for (let r0 = 0; r0 < M; r0 += chunk) {
    const n = Math.min(chunk, M - r0);
    total += tf.tidy(() => {
      const logits = tf.matMul(tf.slice(h, [r0, 0], [n, d]) as T2, w); // [n, V]
      const lse = tf.logSumExp(logits, 1);
      const flat = tf.tensor1d(
        Int32Array.from(targets.subarray(r0, r0 + n), (y, r) => r * V + y),
        'int32',
      );
      return tf.sub(tf.sum(lse), tf.sum(tf.gather(tf.reshape(logits, [-1]), flat))).dataSync()[0]!;
    });
  }
  return total;
}
