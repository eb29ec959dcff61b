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
 * Scaled-dot-product attention for one layer, looping over (batch, head) so
 * every product is a plain 2-D matMul.
 * q [B, H, T, hd], k/v [B, KV, S, hd] (H a multiple of KV: grouped-query),
 * bias [B, T, S] additive mask (0 or -1e9). Returns [B, H, T, hd].
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor3D): tf.Tensor4D {
  const [B, H, T, hd] = q.shape;
  const KV = k.shape[1];
  const S = k.shape[2];
  const rep = H / KV;
  const scale = 1 / Math.sqrt(hd);
  const op = custom<tf.Tensor4D>(([qq, kk, vv], save) => {
    const qs = tf.unstack(tf.reshape(qq!, [B * H, T, hd])) as T2[];
    const ks = tf.unstack(tf.reshape(kk!, [B * KV, S, hd])) as T2[];
    const vs = tf.unstack(tf.reshape(vv!, [B * KV, S, hd])) as T2[];
    const biases = tf.unstack(bias) as T2[];
    const kTs = ks.map((x) => tf.transpose(x)); // [hd, S]
    const probs: T2[] = [];
    const outs: T2[] = [];
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const kv = b * KV + Math.floor(h / rep);
        // [T, hd] @ [hd, S] → [T, S]
        const s = tf.add(tf.mul(tf.matMul(qs[b * H + h]!, kTs[kv]!), scale), biases[b]!);
        const p = tf.softmax(s) as T2;
        probs.push(p);
        outs.push(tf.matMul(p, vs[kv]!)); // [T, S] @ [S, hd] → [T, hd]
      }
    }
    const value = tf.reshape(tf.stack(outs), [B, H, T, hd]) as tf.Tensor4D;
    // customGrad runs the forward inside tidy: whatever the backward needs
    // must go through save().
    save([qq!, kk!, vv!, ...probs]);
    return {
      value,
      gradFunc: (dy, saved) => {
        const qs = tf.unstack(tf.reshape(saved[0]!, [B * H, T, hd])) as T2[];
        const ks = tf.unstack(tf.reshape(saved[1]!, [B * KV, S, hd])) as T2[];
        const vs = tf.unstack(tf.reshape(saved[2]!, [B * KV, S, hd])) as T2[];
        const probs = saved.slice(3) as T2[];
        const dys = tf.unstack(tf.reshape(dy, [B * H, T, hd])) as T2[];
        const dq: T2[] = [];
        const dk: (tf.Tensor | null)[] = new Array<tf.Tensor | null>(B * KV).fill(null);
        const dv: (tf.Tensor | null)[] = new Array<tf.Tensor | null>(B * KV).fill(null);
        const vTs = vs.map((x) => tf.transpose(x)); // [hd, S]
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < H; h++) {
            const i = b * H + h;
            const kv = b * KV + Math.floor(h / rep);
            const p = probs[i]!;
            const g = dys[i]!;
            const pT = tf.transpose(p); // [S, T]
            const dvi = tf.matMul(pT, g); // [S, hd]
            const dp = tf.matMul(g, vTs[kv]!); // [T, S]
            // softmax backward: ds = p ⊙ (dp − rowsum(dp ⊙ p)), then the 1/√hd scale
            const ds = tf.mul(tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), 1, true))), scale) as T2;
            dq.push(tf.matMul(ds, ks[kv]!)); // [T, S] @ [S, hd]
            const dki = tf.matMul(tf.transpose(ds), qs[i]!); // [S, T] @ [T, hd]
            dk[kv] = dk[kv] ? tf.add(dk[kv]!, dki) : dki;
            dv[kv] = dv[kv] ? tf.add(dv[kv]!, dvi) : dvi;
          }
        }
        return [
          tf.reshape(tf.stack(dq), [B, H, T, hd]),
          tf.reshape(tf.stack(dk as tf.Tensor[]), [B, KV, S, hd]),
          tf.reshape(tf.stack(dv as tf.Tensor[]), [B, KV, S, hd]),
        ];
      },
    };
  });
  return op(q, k, v) as tf.Tensor4D;
}

/**
 * Summed cross-entropy of `h` [M, d] through the head `w` [d, V] against
 * `targets` [M], in row chunks so at most [chunk, V] logits exist at once.
 * The gradient is computed during the forward pass (softmax − onehot is all
 * the backward needs), which is what keeps the chunks from being held on
 * the tape; `wT` is the head as [V, d] for dh.
 */
export function headLossWithGrad(h: tf.Tensor2D, w: tf.Tensor2D, wT: tf.Tensor2D, targets: Int32Array, chunk: number): tf.Scalar {
  const [M, d] = h.shape;
  const V = w.shape[1];
  const op = custom<tf.Scalar>(([hh, ww], save) => {
    let loss: tf.Tensor = tf.scalar(0);
    const dhs: tf.Tensor[] = [];
    let dw: tf.Tensor = tf.zeros([d, V]);
    for (let r0 = 0; r0 < M; r0 += chunk) {
      const n = Math.min(chunk, M - r0);
      const hc = tf.slice(hh!, [r0, 0], [n, d]) as T2;
      const tgt = tf.tensor1d(targets.subarray(r0, r0 + n), 'int32');
      const res = tf.tidy(() => {
        const logits = tf.matMul(hc, ww as T2); // [n, V]
        const lse = tf.logSumExp(logits, 1, true); // [n, 1]
        const onehot = tf.cast(tf.oneHot(tgt, V), 'float32'); // [n, V] (oneHot with a float dtype is wrong on wasm 4.22)
        const l = tf.sub(tf.sum(lse), tf.sum(tf.mul(logits, onehot)));
        const dlogits = tf.sub(tf.exp(tf.sub(logits, lse)), onehot) as T2; // softmax − onehot
        return { l, dh: tf.matMul(dlogits, wT), dw: tf.matMul(tf.transpose(hc), dlogits) };
      });
      tgt.dispose();
      const newLoss = tf.add(loss, res.l);
      const newDw = tf.add(dw, res.dw);
      loss.dispose();
      dw.dispose();
      res.l.dispose();
      res.dw.dispose();
      loss = newLoss;
      dw = newDw;
      dhs.push(res.dh);
    }
    const dh = dhs.length === 1 ? dhs[0]! : tf.concat(dhs, 0);
    save([dh, dw]);
    return {
      value: loss as tf.Scalar,
      gradFunc: (dy, saved) => [tf.mul(saved[0]!, dy), tf.mul(saved[1]!, dy)],
    };
  });
  return op(h, w) as tf.Scalar;
}

/** Summed cross-entropy without gradients, chunked (eval). */
export function headLoss(h: tf.Tensor2D, w: tf.Tensor2D, targets: Int32Array, chunk: number): number {
  const [M, d] = h.shape;
  const V = w.shape[1];
  let total = 0;
  for (let r0 = 0; r0 < M; r0 += chunk) {
    const n = Math.min(chunk, M - r0);
    total += tf.tidy(() => {
      const logits = tf.matMul(tf.slice(h, [r0, 0], [n, d]) as T2, w);
      const lse = tf.logSumExp(logits, 1);
      const onehot = tf.cast(tf.oneHot(tf.tensor1d(targets.subarray(r0, r0 + n), 'int32'), V), 'float32');
      return tf.sub(tf.sum(lse), tf.sum(tf.mul(logits, onehot))).dataSync()[0]!;
    });
  }
  return total;
}
