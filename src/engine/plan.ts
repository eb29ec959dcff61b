/**
 * The memory plan of a run, computed from the config before anything is
 * allocated: wasm-heap bytes (weights, optimizer state, activations, the
 * output head's chunks) against tfjs-wasm's 4 GiB cap, and host bytes
 * (offloaded weights) against the machine's RAM. It picks gradient
 * checkpointing and how many layers' weights stay in host memory, and when
 * nothing fits it says so with the settings that would — instead of a wasm
 * `Aborted()` minutes later. Estimates are upper bounds of what the engine
 * allocates (measured on the SmolLM2-135M / Qwen2.5-0.5B / 1.5B shapes).
 */
import os from 'node:os';
import { ChatsftError } from '../errors.js';
import type { LlamaConfig } from '../hf/config.js';

/** tfjs-wasm's heap is 32-bit; keep a margin for fragmentation and the runtime. */
export const WASM_HEAP_LIMIT = 4 * 1024 ** 3;
/**
 * Heap budget of a plan. Offloading more layers costs only speed, so inference and LoRA keep a
 * wider margin (measured: a Qwen2.5-0.5B LoRA run planned at 3.5 GiB failed on its second step,
 * fragmentation); full fine-tuning cannot offload and gets the narrower one.
 */
const budget = (mode: PlanMode): number => (mode === 'full' ? 0.9 : 0.8) * WASM_HEAP_LIMIT;

export type PlanMode = 'infer' | 'lora' | 'full';

export interface PlanInput {
  config: LlamaConfig;
  mode: PlanMode;
  /** Rows per micro-batch (inference: prompts generated together). */
  batchSize: number;
  /** Tokens per row (max_length; inference: prompt + new tokens). */
  seqLen: number;
  lora?: { r: number; targets: string[]; trainRows: number };
  /** Forced on/off; default: on when the taped activations would not fit. */
  checkpointing?: boolean;
  /** Forced count; default: the fewest that fit (0 for full fine-tuning, which cannot offload). */
  hostLayers?: number;
  /** Bytes per stored weight value in the checkpoint (2 for bf16/f16). */
  storedBytes?: number;
  /** RAM of the machine (default os.totalmem()). */
  hostMemory?: number;
}

export interface MemoryPlan {
  parameters: number;
  checkpointing: boolean;
  hostLayers: number;
  /** The embedding table stays in host memory and the heap holds a frozen [d, V] head. */
  hostEmbedding: boolean;
  /** A frozen [d, V] head built once (inference; LoRA without trained token rows). */
  frozenHead: boolean;
  /** wasm-heap bytes by part, and their sum. */
  heap: { weights: number; optimizer: number; activations: number; head: number; peak: number };
  /** Host bytes of offloaded weights. */
  host: number;
  fits: boolean;
  /** Why it does not fit, when it does not. */
  problem: string | null;
}

const GiB = 1024 ** 3;
export const gib = (b: number): string => `${(b / GiB).toFixed(2)} GiB`;

function sizes(c: LlamaConfig) {
  const d = c.hiddenSize;
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const I = c.intermediateSize;
  const layerMatrix = d * q + 2 * d * kv + q * d + 3 * d * I;
  const layerSmall = 2 * d + (c.attentionBias ? q + 2 * kv : 0) + (c.qkNorm ? 2 * c.headDim : 0);
  const table = c.vocabSize * d;
  const parameters = c.numHiddenLayers * (layerMatrix + layerSmall) + table * (c.tieWordEmbeddings ? 1 : 2) + d;
  return { d, q, kv, I, layerMatrix, layerSmall, table, parameters };
}

/** Parameters of the model a config describes (no allocation). */
export function parameterCount(c: LlamaConfig): number {
  return sizes(c).parameters;
}

function loraParams(c: LlamaConfig, lora: NonNullable<PlanInput['lora']>): number {
  const { d, q, kv, I } = sizes(c);
  const dims: Record<string, [number, number]> = {
    q_proj: [d, q],
    k_proj: [d, kv],
    v_proj: [d, kv],
    o_proj: [q, d],
    gate_proj: [d, I],
    up_proj: [d, I],
    down_proj: [I, d],
  };
  let n = 0;
  for (const t of lora.targets) {
    const [i, o] = dims[t] ?? [0, 0];
    n += lora.r * (i + o);
  }
  return c.numHiddenLayers * n + lora.trainRows * d * (c.tieWordEmbeddings ? 1 : 2);
}

function evaluate(inp: PlanInput, checkpointing: boolean, hostLayers: number): MemoryPlan {
  const c = inp.config;
  const s = sizes(c);
  const L = c.numHiddenLayers;
  const B = inp.batchSize;
  const T = inp.seqLen;
  const N = B * T;
  const H = c.numAttentionHeads;
  const f = 4; // f32 bytes
  // Large frozen tables stay on the host (no [V, d] copy and no per-use transposes in the heap).
  const hostEmbedding =
    f * s.table >= 256 * 1024 ** 2 && (inp.mode === 'infer' || (inp.mode === 'lora' && (inp.lora?.trainRows ?? 0) === 0));
  // Weights in the heap: tables, norms/biases, in-heap layers, plus a host layer uploaded in both
  // layouts and concatenated. Every matrix a product uses also gets XNNPACK's packed copy, which
  // tfjs-wasm caches per weight tensor (measured: a 0.5 B model's 1.9 GiB of weights need ~4 GiB).
  const weights =
    f *
    (s.table * ((c.tieWordEmbeddings ? 1 : 2) - (hostEmbedding ? 1 : 0)) +
      L * s.layerSmall +
      2 * (L - hostLayers) * s.layerMatrix +
      (hostLayers > 0 ? 5 * s.layerMatrix : 0));
  const trained = inp.mode === 'full' ? s.parameters : inp.mode === 'lora' && inp.lora ? loraParams(c, inp.lora) : 0;
  // Gradients, AdamW m and v; full fine-tuning adds the update's temporaries of its largest
  // tensor (clipping and AdamW go tensor by tensor); LoRA's are small, counted as one more copy.
  const largest = Math.max(s.table, s.d * s.I);
  const optimizer = inp.mode === 'infer' ? 0 : inp.mode === 'full' ? f * (3 * trained + 4 * largest) : f * 4 * trained;
  // Floats alive per token per layer on the tape (norms, q/k/v, RoPE, MLP), and attention's [T, T] blocks per head.
  const perToken = 12 * s.d + 4 * s.q + 4 * s.kv + 5 * s.I;
  const attn = 3 * B * H * T * T;
  const layerActs = f * (N * perToken + attn);
  let activations: number;
  if (inp.mode === 'infer') activations = f * (N * perToken + B * H * T * T);
  else if (checkpointing) activations = f * L * N * s.d + 2 * layerActs;
  else activations = L * layerActs;
  // Output head: the [d, V] transpose of the table, and a chunk's logits / softmax / dlogits.
  // forward.ts lossChunk (repeated here so the plan needs no TensorFlow import).
  const chunkRows = Math.min(N, Math.max(16, Math.min(512, Math.floor(2 ** 23 / c.vocabSize))));
  let head = 2 * f * s.table + f * 6 * chunkRows * c.vocabSize;
  if (inp.mode === 'full') head += f * 2 * s.table; // dW [d, V] and its transpose into the table's gradient
  const peak = weights + optimizer + activations + head + 64 * 1024 ** 2;
  const host = (hostLayers * s.layerMatrix + (hostEmbedding ? s.table : 0)) * (inp.storedBytes ?? 2);
  const ram = inp.hostMemory ?? os.totalmem();
  let problem: string | null = null;
  if (host + peak > ram)
    problem = `needs ${gib(host + peak)} of RAM (${gib(host)} host weights + ${gib(peak)} wasm heap); this machine has ${gib(ram)}`;
  else if (peak > budget(inp.mode))
    problem = `needs ${gib(peak)} of wasm heap (weights ${gib(weights)}, optimizer ${gib(optimizer)}, activations ${gib(activations)}, output head ${gib(head)}); tfjs-wasm's heap is capped at ${gib(WASM_HEAP_LIMIT)} (plan budget ${gib(budget(inp.mode))}, leaving room for fragmentation)`;
  const frozenHead = inp.mode === 'infer' || (inp.mode === 'lora' && (inp.lora?.trainRows ?? 0) === 0);
  return {
    parameters: s.parameters,
    checkpointing,
    hostLayers,
    hostEmbedding,
    frozenHead,
    heap: { weights, optimizer, activations, head, peak },
    host,
    fits: problem === null,
    problem,
  };
}

/** The cheapest plan that fits: no checkpointing and no offload when possible. */
export function planMemory(inp: PlanInput): MemoryPlan {
  const L = inp.config.numHiddenLayers;
  // From ~50 M parameters on, per-layer recomputation is the default: the taped path keeps every
  // layer's concatenated weights and their XNNPACK packed copies alive for the backward pass.
  const big = parameterCount(inp.config) >= 50e6;
  const ckpts = inp.mode === 'infer' ? [false] : inp.checkpointing !== undefined ? [inp.checkpointing] : big ? [true] : [false, true];
  const hosts = inp.hostLayers !== undefined ? [inp.hostLayers] : inp.mode === 'full' ? [0] : Array.from({ length: L + 1 }, (_, k) => k);
  let last: MemoryPlan | null = null;
  for (const ck of ckpts) {
    for (const k of hosts) {
      const p = evaluate(inp, ck, k);
      if (p.fits) return p;
      last = p;
      // RAM, not the heap, is the limit: more offload will not help.
      if (p.problem?.includes('of RAM')) break;
    }
  }
  return last!;
}

/** One line per part, for the log before work starts. */
export function describePlan(p: MemoryPlan, mode: PlanMode): string {
  const h = p.heap;
  const parts = [...(p.hostEmbedding ? ['the embedding table'] : []), ...(p.hostLayers > 0 ? [`${p.hostLayers} layers' weights`] : [])];
  const where = parts.length > 0 ? `, ${parts.join(' and ')} in host memory (${gib(p.host)})` : '';
  return (
    `memory plan (${mode}, ${(p.parameters / 1e6).toFixed(1)} M parameters${p.checkpointing ? ', gradient checkpointing' : ''}${where}): ` +
    `wasm heap ≈ ${gib(h.peak)} of ${gib(WASM_HEAP_LIMIT)} = weights ${gib(h.weights)} + optimizer ${gib(h.optimizer)} + activations ${gib(h.activations)} + output head ${gib(h.head)}`
  );
}

/**
 * Throw a clear error when `plan` does not fit, naming the settings that
 * would (LoRA instead of full fine-tuning, a smaller batch or max_length).
 */
export function assertPlanFits(plan: MemoryPlan, inp: PlanInput, where?: string): void {
  if (plan.fits) return;
  // One change at a time first, then the changes combined in order.
  const changes: [string, (i: PlanInput) => PlanInput][] = [];
  if (inp.mode === 'full')
    changes.push([
      'lora (e.g. lora: {r: 16})',
      (i) => ({
        ...i,
        mode: 'lora',
        lora: { r: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], trainRows: 0 },
      }),
    ]);
  if (inp.batchSize > 1)
    changes.push([
      inp.mode === 'infer' ? 'one prompt at a time' : 'batch_size 1 (--batch-size 1; grad_accum keeps the effective batch)',
      (i) => ({ ...i, batchSize: 1 }),
    ]);
  const flag = inp.mode === 'infer' ? 'a prompt + new tokens of at most' : 'max_length (--max-length)';
  for (let T = Math.floor(inp.seqLen / 2); T >= 64; T = Math.floor(T / 2)) changes.push([`${flag} ${T}`, (i) => ({ ...i, seqLen: T })]);
  const fixes: string[] = [];
  for (const [what, f] of changes) if (planMemory(f(inp)).fits) fixes.push(what);
  if (fixes.length === 0) {
    let cur = inp;
    const done: string[] = [];
    for (const [what, f] of changes) {
      cur = f(cur);
      done.push(what);
      if (planMemory(cur).fits) {
        fixes.push(done.join(' + '));
        break;
      }
    }
  }
  const hint = fixes.length > 0 ? `; these would fit: ${fixes.slice(0, 3).join('; ')}` : '; no smaller setting fits on this machine';
  throw new ChatsftError(
    'RESOURCE_LIMIT',
    `the model does not fit: ${(plan.parameters / 1e6).toFixed(1)} M parameters ${plan.problem}${hint}`,
    where,
  );
}
