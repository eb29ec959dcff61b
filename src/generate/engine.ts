/**
 * StepModels over the embedded tfjs engine.
 *
 * `engineStepModel` uses the engine's KV cache: prompts are left-padded to
 * one length and prefilled once (padding masked out of attention, positions
 * restart at 0 for each row's first real token), then each step feeds one
 * token per running row. When rows finish, the cache is compacted to the
 * running rows, so finished rows cost no further work (the engine's
 * attention loops over batch rows).
 *
 * `engineNoCacheStepModel` recomputes the full sequence each step; it is the
 * reference the cached path must match (tests) and costs O(T^2).
 */
import { ChatsftError } from '../errors.js';
import {
  checkSlidingWindow,
  createKvCache,
  disposeKvCache,
  forwardWithCache,
  logits,
  type KvCache,
  type LlamaModel,
} from '../engine/index.js';
import type { Batch } from '../batch/types.js';
import { noCacheStepModel } from './no_cache.js';
import type { StepModel } from './types.js';

/** Padding id for left-padded prefill slots; masked, so any valid id works. */
const PAD_SLOT_ID = 0;

/** Keeps cache rows `keep` (indices into the current cache); the rest are dropped. */
function compactCache(cache: KvCache, keep: readonly number[]): KvCache {
  // Each buffer is [B, KV, maxLen, hd]: row r is one contiguous block.
  const pick = (bufs: Float32Array[]): Float32Array[] =>
    bufs.map((buf) => {
      const block = buf.length / cache.batchSize;
      const out = new Float32Array(keep.length * block);
      keep.forEach((r, i) => out.set(buf.subarray(r * block, (r + 1) * block), i * block));
      return out;
    });
  const valid = new Uint8Array(keep.length * cache.maxLen);
  keep.forEach((r, i) => valid.set(cache.valid.subarray(r * cache.maxLen, (r + 1) * cache.maxLen), i * cache.maxLen));
  return {
    batchSize: keep.length,
    maxLen: cache.maxLen,
    length: cache.length,
    k: pick(cache.k),
    v: pick(cache.v),
    valid,
    head: cache.head,
  };
}

export function engineStepModel(model: LlamaModel): StepModel {
  let cache: KvCache | null = null;
  let cacheRows: number[] = []; // batch index held by each cache row, ascending
  let nextPosition: number[] = []; // per batch index: position of its next token
  return {
    vocabSize: model.config.vocabSize,
    start(prompts, { maxNewTokens }) {
      const T = Math.max(...prompts.map((p) => p.length));
      checkSlidingWindow(model.config, T + maxNewTokens, 'prompt + max_new_tokens');
      cache = createKvCache(model, prompts.length, T + maxNewTokens);
      const ids = prompts.map((p) => [...Array<number>(T - p.length).fill(PAD_SLOT_ID), ...p]);
      const mask = prompts.map((p) => [...Array<number>(T - p.length).fill(0), ...Array<number>(p.length).fill(1)]);
      const positions = prompts.map((p) => [...Array<number>(T - p.length).fill(0), ...p.map((_, i) => i)]);
      cacheRows = prompts.map((_, b) => b);
      nextPosition = prompts.map((p) => p.length);
      return forwardWithCache(model, ids, cache, positions, mask);
    },
    step(rows, tokens) {
      if (cache === null) throw new ChatsftError('ENGINE_ERROR', 'step called before start');
      if (rows.length !== cacheRows.length) {
        const keep = rows.map((b) => {
          const r = cacheRows.indexOf(b);
          if (r < 0) throw new ChatsftError('ENGINE_ERROR', `step: row ${b} is not running`);
          return r;
        });
        cache = compactCache(cache, keep);
        cacheRows = [...rows];
      }
      const positions = rows.map((b) => [(nextPosition[b] = (nextPosition[b] as number) + 1) - 1]);
      return forwardWithCache(
        model,
        tokens.map((t) => [t]),
        cache,
        positions,
      );
    },
    dispose() {
      if (cache !== null) disposeKvCache(cache);
      cache = null;
    },
  };
}

/** Last-position logits of each sequence by a full forward pass, one sequence at a time. */
export function engineNoCacheStepModel(model: LlamaModel): StepModel {
  const V = model.config.vocabSize;
  return noCacheStepModel(V, (seqs) => {
    const out = new Float32Array(seqs.length * V);
    seqs.forEach((seq, i) => {
      const T = seq.length;
      const batch: Batch = {
        batchSize: 1,
        seqLen: T,
        inputIds: Int32Array.from(seq),
        labels: new Int32Array(T).fill(-100),
        attentionMask: new Uint8Array(T).fill(1),
        positionIds: Int32Array.from(seq, (_, j) => j),
        segmentIds: new Int32Array(T).fill(1),
      };
      const all = logits(model, batch); // [1, T, V]
      out.set(all.subarray((T - 1) * V, T * V), i * V);
    });
    return out;
  });
}
