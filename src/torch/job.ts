/**
 * What the PyTorch worker reads (python/chatsft_worker/data.py): rows, the
 * step plan, initial weights and LoRA A matrices, all computed here so both
 * engines consume the same numbers: same rows, same order, same learning
 * rate and loss normaliser per step, same initial values.
 */
import fs from 'node:fs';
import { collate } from '../batch/collate.js';
import type { Row } from '../batch/types.js';
import type { LlamaConfig, LoraSpec } from '../engine/index.js';
import { LORA_TARGETS, Rng, countSupervised, expectedShapes, writeSafetensors } from '../engine/index.js';
import type { DataOrder } from '../train/data.js';

/** Rows as int32 LE: per row n, k, input_ids[n], labels[n], seq_lengths[k] (k = 0 unpacked). */
export function writeRowsFile(file: string, rows: Row[]): void {
  const total = rows.reduce((s, r) => s + 2 + 2 * r.inputIds.length + (r.seqLengths?.length ?? 0), 0);
  const buf = new Int32Array(total);
  let i = 0;
  for (const r of rows) {
    const n = r.inputIds.length;
    const segs = r.seqLengths ?? [];
    buf[i++] = n;
    buf[i++] = segs.length;
    buf.set(r.inputIds, i);
    i += n;
    buf.set(r.labels, i);
    i += n;
    buf.set(segs, i);
    i += segs.length;
  }
  fs.writeFileSync(file, new Uint8Array(buf.buffer));
}

export interface Plan {
  /** Supervised tokens of each optimiser step (all its micro-batches): the loss normaliser. */
  stepTokens: number[];
  /** Non-padding input tokens of each step (what tokens/s counts). */
  inputTokens: number[];
}

/**
 * The plan as int32 LE: per step, per micro-batch, c then c row indices of
 * the global micro-batch `step·gradAccum + i` (DataOrder over batch ×
 * processes rows, so N processes see exactly the single-process batches).
 */
export function writePlanFile(file: string, rows: Row[], order: DataOrder, totalSteps: number, gradAccum: number, padId: number): Plan {
  const ints: number[] = [];
  const stepTokens: number[] = [];
  const inputTokens: number[] = [];
  const index = new Map<Row, number>(rows.map((r, i) => [r, i]));
  for (let s = 0; s < totalSteps; s++) {
    let sup = 0;
    let real = 0;
    for (let k = 0; k < gradAccum; k++) {
      const micro = order.micro(s * gradAccum + k);
      ints.push(micro.length, ...micro.map((r) => index.get(r)!));
      // Padding side does not change which positions are supervised.
      sup += countSupervised(collate(micro, { padId, paddingSide: 'right' }));
      real += micro.reduce((n, r) => n + r.inputIds.length, 0);
    }
    stepTokens.push(sup);
    inputTokens.push(real);
  }
  fs.writeFileSync(file, new Uint8Array(Int32Array.from(ints).buffer));
  return { stepTokens, inputTokens };
}

/**
 * LoRA A matrices as addLora (src/engine/lora.ts) draws them from Rng(seed):
 * per module in layer-major LORA_TARGETS order, [in, r] row-major U(±1/√in);
 * written in PEFT's [r, in] layout under `<module>.lora_A`.
 */
export function loraInitTensors(config: LlamaConfig, spec: LoraSpec, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = new Rng(seed);
  const shapes = expectedShapes(config);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (let l = 0; l < config.numHiddenLayers; l++) {
    for (const t of LORA_TARGETS) {
      if (!spec.targets.includes(t)) continue;
      const group = ['gate_proj', 'up_proj', 'down_proj'].includes(t) ? 'mlp' : 'self_attn';
      const name = `model.layers.${l}.${group}.${t}`;
      const inDim = shapes.get(`${name}.weight`)![1]!;
      const bound = 1 / Math.sqrt(inDim);
      const data = new Float32Array(inDim * spec.r);
      for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * bound;
      const peft = new Float32Array(data.length);
      for (let i = 0; i < inDim; i++) for (let j = 0; j < spec.r; j++) peft[j * inDim + i] = data[i * spec.r + j]!;
      out.set(`${name}.lora_A`, { shape: [spec.r, inDim], data: peft });
    }
  }
  return out;
}

export { writeSafetensors };
