/**
 * The single-token decode step: one new token per row against the KV cache.
 *
 * On tfjs-wasm each kernel costs tens of microseconds to dispatch, and at
 * t = 1 everything but the weight products is tiny ([B, d] vectors, one
 * query per head). So only the projections and the head run as tfjs
 * kernels (plain 2-D matMuls on the model's own weight tensors, whose
 * packed XNNPACK operators are cached per weight); norms, RoPE, SwiGLU and
 * the single-query attention run as JS loops over Float32Arrays, reading
 * and appending the cache's JS key/value buffers in place. That takes a
 * step from ≈ 330 kernels to 7 products per layer plus the head (the 19.5 M
 * benchmark model: 23.6 → ≈ 4 ms per token, of which the [1, 256] × [256,
 * 32002] head is ≈ 1.7). The JS attention costs ≈ 1.6 ns per multiply-add,
 * ≈ 0.7 ms per 100 cached slots there. Results equal the general path
 * (forwardWithCache's prefill) up to float rounding.
 */
import { tf } from './backend.js';
import { embedIds, project, ropeTables } from './forward.js';
import type { KvCache } from './infer.js';
import type { LlamaModel } from './types.js';
import { hostMatVec } from './weights.js';
import { loraDelta } from './lora.js';

const NO_GRAD = { training: false } as const;

/** Values of a (small) parameter tensor, e.g. a norm weight. */
function values(model: LlamaModel, name: string): Float32Array {
  return model.params.get(name)!.dataSync() as Float32Array;
}

/**
 * The values of the tensors `f` makes, which are freed. (Not by returning
 * arrays from tf.tidy: tidy walks what it returns, element by element.)
 */
export function readTensors(f: () => tf.Tensor[]): Float32Array[] {
  const ts = tf.tidy(f);
  const out = ts.map((t) => t.dataSync() as Float32Array);
  tf.dispose(ts);
  return out;
}

/**
 * Projections `names` of the same rows x [rows, in] → one [rows, out] array
 * each. Weights in host memory are applied in JS (hostMatVec); bias and LoRA
 * are added as in `project`.
 */
function projectRows(model: LlamaModel, names: string[], x: Float32Array, rows: number): Float32Array[] {
  const onHost = names.map((n) => model.host?.get(`${n}.weight`));
  if (onHost.every((h) => h === undefined)) {
    return readTensors(() => {
      const xt = tf.tensor2d(x, [rows, x.length / rows]);
      return names.map((n) => project(model, n, xt, NO_GRAD));
    });
  }
  return names.map((n, i) => {
    const h = onHost[i];
    if (!h) return projectRows(model, [n], x, rows)[0]!;
    const y = hostMatVec(h, x, rows);
    const extra = readTensors(() => {
      const xt = tf.tensor2d(x, [rows, x.length / rows]);
      const bias = model.params.get(`${n}.bias`);
      const d = loraDelta(model, n, xt, NO_GRAD);
      return [...(bias ? [tf.add(tf.zeros([rows, y.length / rows]), bias)] : []), ...(d ? [d] : [])];
    });
    for (const e of extra) for (let k = 0; k < y.length; k++) y[k]! += e[k]!;
    return y;
  });
}

/** RMSNorm of each length-n row of x, times w [n]; returns a new array. */
function rmsNormRows(x: Float32Array, n: number, w: Float32Array, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length; r += n) {
    let ss = 0;
    for (let i = r; i < r + n; i++) ss += x[i]! * x[i]!;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[r + i] = x[r + i]! * inv * w[i]!;
  }
  return out;
}

/**
 * In-place RoPE on x [B, heads, hd] with row b's cos/sin [hd] tables
 * (HF: x·cos + rotate_half(x)·sin, rotate_half = cat(−x2, x1)).
 */
function ropeRows(x: Float32Array, heads: number, hd: number, cos: Float32Array, sin: Float32Array): void {
  const half = hd / 2;
  for (let r = 0; r < x.length / hd; r++) {
    const o = r * hd;
    const t = Math.floor(r / heads) * hd; // row b = r / heads
    for (let i = 0; i < half; i++) {
      const x1 = x[o + i]!;
      const x2 = x[o + i + half]!;
      x[o + i] = x1 * cos[t + i]! - x2 * sin[t + i]!;
      x[o + i + half] = x2 * cos[t + i + half]! + x1 * sin[t + i + half]!;
    }
  }
}

/** x + y, elementwise, as a new array. */
function add(x: Float32Array, y: Float32Array): Float32Array {
  return x.map((v, i) => v + y[i]!);
}

/**
 * Attention of one query q [hd] over slots 0..past of one kv head's keys and
 * values k, v ([maxLen, hd] blocks): slots j < past count where seen[j], and
 * slot past is the query's own. Writes out [hd]; `scores` is scratch.
 */
function attendOne(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  seen: Uint8Array,
  past: number,
  hd: number,
  scores: Float64Array,
  out: Float32Array,
): void {
  const scale = 1 / Math.sqrt(hd);
  let max = -Infinity;
  for (let j = 0; j <= past; j++) {
    let s = -Infinity;
    if (j === past || seen[j]) {
      s = 0;
      for (let i = 0, o = j * hd; i < hd; i++) s += q[i]! * k[o + i]!;
      s *= scale;
      if (s > max) max = s;
    }
    scores[j] = s;
  }
  let z = 0;
  for (let j = 0; j <= past; j++) z += scores[j] = Math.exp(scores[j]! - max);
  out.fill(0, 0, hd);
  for (let j = 0; j <= past; j++) {
    const w = scores[j]! / z;
    if (w === 0) continue;
    for (let i = 0, o = j * hd; i < hd; i++) out[i]! += w * v[o + i]!;
  }
}

/**
 * Runs tokens `ids` [B] at `positions` [B] through the model, writing their
 * keys/values into slot `cache.length` (which the caller has marked in
 * `cache.valid` and advances afterwards). Returns logits [B, vocab] flat.
 */
export function decodeStep(model: LlamaModel, cache: KvCache, head: tf.Tensor2D, ids: Int32Array, positions: Int32Array): Float32Array {
  const c = model.config;
  const B = ids.length;
  const [d, H, KV, hd, eps] = [c.hiddenSize, c.numAttentionHeads, c.numKeyValueHeads, c.headDim, c.rmsNormEps];
  const { maxLen, valid } = cache;
  const past = cache.length;
  const { cos, sin } = ropeTables(c, positions);
  const rep = H / KV;
  const scores = new Float64Array(past + 1);

  let [x] = readTensors(() => [embedIds(model, ids)]) as [Float32Array];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    x = ((): Float32Array => {
      const p = `model.layers.${l}`;
      const a = `${p}.self_attn`;
      const hn = rmsNormRows(x, d, values(model, `${p}.input_layernorm.weight`), eps);
      let [q, k, v] = projectRows(model, [`${a}.q_proj`, `${a}.k_proj`, `${a}.v_proj`], hn, B) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      if (c.qkNorm) {
        q = rmsNormRows(q, hd, values(model, `${a}.q_norm.weight`), eps);
        k = rmsNormRows(k, hd, values(model, `${a}.k_norm.weight`), eps);
      }
      ropeRows(q, H, hd, cos, sin);
      ropeRows(k, KV, hd, cos, sin);
      const kBuf = cache.k[l]!;
      const vBuf = cache.v[l]!;
      // Append: cache row (b, kv) is a [maxLen, hd] block; the new token goes to slot `past`.
      for (let r = 0; r < B * KV; r++) {
        kBuf.set(k.subarray(r * hd, (r + 1) * hd), (r * maxLen + past) * hd);
        vBuf.set(v.subarray(r * hd, (r + 1) * hd), (r * maxLen + past) * hd);
      }
      const attn = new Float32Array(B * H * hd);
      for (let b = 0; b < B; b++) {
        const seen = valid.subarray(b * maxLen, b * maxLen + past);
        for (let h = 0; h < H; h++) {
          const kv = (b * KV + Math.floor(h / rep)) * maxLen * hd; // grouped-query: h = kv·rep + r
          attendOne(
            q.subarray((b * H + h) * hd),
            kBuf.subarray(kv),
            vBuf.subarray(kv),
            seen,
            past,
            hd,
            scores,
            attn.subarray((b * H + h) * hd),
          );
        }
      }
      const [o] = projectRows(model, [`${a}.o_proj`], attn, B) as [Float32Array];
      const hres = add(x, o);
      const hn2 = rmsNormRows(hres, d, values(model, `${p}.post_attention_layernorm.weight`), eps);
      const [g, u] = projectRows(model, [`${p}.mlp.gate_proj`, `${p}.mlp.up_proj`], hn2, B) as [Float32Array, Float32Array];
      const act = g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]!); // SwiGLU: silu(gate) ⊙ up
      const [down] = projectRows(model, [`${p}.mlp.down_proj`], act, B) as [Float32Array];
      return add(hres, down);
    })();
  }
  const h = rmsNormRows(x, d, values(model, 'model.norm.weight'), eps);
  return readTensors(() => [tf.matMul(tf.tensor2d(h, [B, d]), head)])[0]!;
}
