/**
 * Plain data of the doctor: findings (SPEC §7) and what the checks share.
 * Checks are functions from a context to `Finding[]`; nothing here prints.
 */
import type { SftConfig } from '../config/schema.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import type { CollatorCount } from './checks/collator.js';

export type Severity = 'error' | 'warning' | 'info';

/** JSON-safe evidence: ids, token strings, counts, line numbers. */
export type EvidenceValue = string | number | boolean | null | EvidenceValue[] | { [key: string]: EvidenceValue };
export type Evidence = Record<string, EvidenceValue>;

/** Stable finding codes of SPEC §7, plus the doctor's own info and template codes. */
export type FindingCode =
  | 'PAD_IS_EOS'
  | 'PAD_MISSING'
  | 'PADDING_LEFT'
  | 'EOT_UNSUPERVISED'
  | 'EOT_NOT_SINGLE_TOKEN'
  | 'TEMPLATE_MISSING'
  | 'TEMPLATE_NO_EOT'
  | 'STOP_IDS_MISSING_EOT'
  | 'TRUNCATION_CUTS_EOT'
  | 'CONTENT_HAS_SPECIAL_TOKENS'
  | 'DATA_INVALID'
  | 'NO_TRAINABLE_TOKENS'
  | 'BOS_DOUBLED'
  | 'NEW_TOKENS_UNTRAINED'
  // Not in SPEC §7's table: a template chatsft cannot render or locate spans in.
  | 'TEMPLATE_BROKEN'
  // The inference prompt does not tokenize as a prefix of the training row (train/inference mismatch).
  | 'PROMPT_NOT_PREFIX'
  // The template drops reasoning of earlier assistant turns (info).
  | 'REASONING_DROPPED'
  // --engine torch readiness (doctor --engine torch).
  | 'ENGINE_UNAVAILABLE'
  | 'ENGINE_CPU_ONLY'
  | 'ENGINE_READY'
  // Info findings.
  | 'EOT_FOUND'
  | 'STOP_IDS'
  | 'PAD_CHOSEN'
  | 'DATA_SUMMARY'
  | 'COLLATOR_SIMULATION';

export interface Finding {
  code: FindingCode;
  severity: Severity;
  /** One sentence. */
  message: string;
  evidence: Evidence;
  /** The config change or flag that fixes it (empty for info). */
  hint: string;
}

/** Collators the doctor can simulate (SPEC §7 `--simulate`). */
export type CollatorName = 'chatsft' | 'hf-lm-collator' | 'hf-completion-collator';
export const COLLATORS: readonly CollatorName[] = ['chatsft', 'hf-lm-collator', 'hf-completion-collator'];

/** Collators that set `labels[input_ids == pad_id] = -100`. */
export function masksByPadId(c: CollatorName): boolean {
  return c !== 'chatsft';
}

/** The EOT the template closes assistant turns with, as discovered on a probe conversation. */
export interface EotInfo {
  /** Every id that closes a supervised turn. */
  ids: number[];
  tokens: string[];
  /** The ids a runtime must stop on (harmony: `<|return|>`/`<|call|>`, not `<|end|>`). */
  stopIds: number[];
}

export interface DoctorContext {
  cfg: SftConfig;
  setup: TokenizerSetup;
  /** Undefined when the template has no usable EOT (a template finding says why). */
  eot: EotInfo | undefined;
  simulate: CollatorName[];
}

/**
 * Everything the checks read, gathered once by runDoctor: the context, the
 * template probe's rendered text, the collator simulation's counts and the
 * data sample's description. Every check has one signature over it
 * (DoctorCheck), so adding one is a function plus a line in runDoctor's list.
 */
export interface DoctorFacts extends DoctorContext {
  /** The template probe's rendered text (undefined when the template could not render it). */
  probeText: string | undefined;
  /** Per simulated collator: trained assistant turns and supervised EOTs over the data. */
  counts: Record<CollatorName, CollatorCount>;
  /** What data the counts come from (a file and its line count, or the probe). */
  sample: string;
}

export type DoctorCheck = (facts: DoctorFacts) => Finding[] | Promise<Finding[]>;

/** A token as people read it in evidence: `<|im_end|> (32000)`. */
export function tok(setup: TokenizerSetup, id: number | undefined): string {
  if (id === undefined) return '(none)';
  return `${setup.tokenizer.idToToken(id) ?? '?'} (${id})`;
}

/** The first few of a list, for evidence that stays short. */
export function firstFew<T>(list: T[], n = 10): T[] {
  return list.slice(0, n);
}
