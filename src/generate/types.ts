/**
 * The contract between the generation loop and any model that can produce
 * next-token logits. The loop works on token ids and stop ids only; it knows
 * nothing about tokenization (the CLI layer encodes prompts and decodes
 * tokens).
 */

/**
 * A model seen one decoding step at a time.
 *
 * Rows are identified by their index in the batch given to `start`. Once a
 * row has finished (stop id or max_new_tokens) the loop never mentions it
 * again, so a model may skip all work for it: a KV-cache engine keeps the
 * row's cache untouched (or frees it), a no-cache engine simply leaves it out
 * of the next forward pass.
 */
export interface StepModel {
  /** Size of the last logits axis. */
  readonly vocabSize: number;
  /**
   * Prefill. `prompts[b]` are the ids of row b (lengths may differ, none
   * empty). Returns the logits at each row's last prompt position,
   * row-major `[prompts.length, vocabSize]`. `limits.maxNewTokens` bounds
   * the steps that follow (a KV cache sizes itself with it).
   */
  start(prompts: readonly (readonly number[])[], limits: { maxNewTokens: number }): Float32Array;
  /**
   * Append one token to each listed row. `rows` are batch indices in
   * ascending order (the still-active rows); `tokens[i]` is appended to row
   * `rows[i]`. Returns the logits of the appended positions,
   * `[rows.length, vocabSize]` in the order of `rows`.
   */
  step(rows: readonly number[], tokens: readonly number[]): Float32Array;
  /** Frees caches / tensors. Called exactly once by `generate`. */
  dispose(): void;
}

/** How one row's generation ended. */
export interface RowResult {
  /** Generated ids, without the stop id that ended the row. */
  tokens: number[];
  /** The stop id that ended the row, or null if it did not stop. */
  stoppedBy: number | null;
  /** True when the row produced max_new_tokens ids without a stop id. */
  hitMaxNewTokens: boolean;
}

/** One streamed token (never a stop id). */
export interface TokenEvent {
  row: number;
  token: number;
  /** 0-based position of the token among the row's new tokens. */
  index: number;
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** Ids that end a row; the id itself is not part of the row's tokens. */
  stopIds: Iterable<number>;
  /** 0 (the default) = greedy argmax; > 0 samples from softmax(logits / T). */
  temperature?: number;
  /** Keep only the k most likely tokens before sampling (0 = off). */
  topK?: number;
  /** Nucleus sampling: smallest set with cumulative probability >= p (1 = off). */
  topP?: number;
  /**
   * Sampling seed. A number seeds row b with (seed, b); an array gives each
   * row its own seed, so a row samples the same tokens whatever batch it is
   * generated in. Ignored under greedy decoding.
   */
  seed?: number | readonly number[];
  /** Called for every generated token as soon as it is chosen. */
  onToken?: (event: TokenEvent) => void;
}
