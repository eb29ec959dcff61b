/**
 * The labelled-example types, owned here: labels/ produces them; batch/,
 * prepare/, inspect/ and doctor/ consume them (batch/ imports from labels/,
 * never the reverse).
 *
 * Labels follow Hugging Face causal-LM semantics: `labels[i]` is the target
 * id at position i or IGNORE_INDEX; the model shifts internally.
 */
import type { Tokens } from '../tokenize/encode.js';

export const IGNORE_INDEX = -100;

/** Why an example was dropped (counted by reason in the manifest's `dropped`). */
export type DropReason =
  | 'invalid_data'
  | 'invalid_utf8'
  | 'line_too_large'
  | 'special_tokens_in_content'
  | 'template_error'
  | 'span_not_found'
  | 'eot_not_found'
  | 'too_long'
  | 'no_supervised_tokens';

/** Reasons that say something about the template rather than the line: when every line fails with one, the run fails. */
export const TEMPLATE_REASONS: ReadonlySet<DropReason> = new Set<DropReason>(['template_error', 'span_not_found', 'eot_not_found']);

/** One assistant turn in token coordinates. */
export interface Turn {
  /** The (first) message of the turn. */
  messageIndex: number;
  /** Every message of the turn (consecutive assistant messages the template merges form one turn). */
  messageIndices: number[];
  trained: boolean;
  /** First supervised token of the turn (== eot when the turn renders nothing but its closing). */
  start: number;
  /** Index of the last token of the closing sequence (the EOT); tokens [start, eot] are the turn. */
  eot: number;
  eotId: number;
  /** Ids of the closing sequence, ending with the EOT (`<|END_RESPONSE|><|END_OF_TURN_TOKEN|>` is two). */
  closing: number[];
  /** Supervised token ranges [a, b] inclusive: one range, or one per `{% generation %}` block. */
  ranges: Array<[number, number]>;
  /** A token crossing the start of the turn (header + reply text in one token) was masked. */
  straddled: boolean;
  toolCalls: boolean;
  /** Token range [a, b] of the reasoning text, when the template rendered it. */
  reasoning?: [number, number];
  /** The message has reasoning the template did not render (not in the row, so not supervised). */
  reasoningDropped: boolean;
}

/** One labelled conversation: what labels/ produces and batch/, prepare/, inspect/ and doctor/ consume. */
export interface LabelledExample {
  /** 1-based input line. */
  line: number;
  inputIds: number[];
  labels: number[];
  turns: Turn[];
  /** Offsets aligned with inputIds (a BOS added here covers no text). */
  tokens: Tokens;
  /** The rendered text the tokens cover. */
  text: string;
}
