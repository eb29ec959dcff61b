/**
 * Loading the config: YAML file, then CLI flags on top, validated by the
 * schema with every error reported at once ("lr: must be > 0") and unknown
 * keys answered with the nearest valid key.
 */
import { existsSync, readFileSync } from 'node:fs';
import { userErrorFromOs } from '../util/fs-errors.js';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ChatsftError } from '../errors.js';
import { ConfigSchema, type SftConfig } from './schema.js';

type LeafKind = 'string' | 'number' | 'boolean' | 'enum' | 'list' | 'record';

export interface FlagSpec {
  /** Config path, e.g. ['lora', 'r']. */
  path: string[];
  /** Flag without dashes, e.g. 'lora-r'. */
  flag: string;
  kind: LeafKind;
  choices?: string[];
  description: string;
}

const FLAG_ALIASES: Record<string, string> = { 'data-train': 'data', 'data-eval': 'eval-data' };

function unwrap(t: z.ZodType): z.ZodType {
  let cur: z.ZodType = t;
  while (cur instanceof z.ZodOptional || cur instanceof z.ZodDefault) cur = cur.unwrap() as z.ZodType;
  return cur;
}

function describe(t: z.ZodType): string {
  let cur: z.ZodType | undefined = t;
  while (cur) {
    if (cur.description) return cur.description;
    cur = cur instanceof z.ZodOptional || cur instanceof z.ZodDefault ? (cur.unwrap() as z.ZodType) : undefined;
  }
  return '';
}

function walk(shape: Record<string, z.ZodType>, prefix: string[], out: FlagSpec[]): void {
  for (const [key, field] of Object.entries(shape)) {
    const inner = unwrap(field);
    const path = [...prefix, key];
    if (inner instanceof z.ZodObject) {
      if (key === 'lora') out.push({ path, flag: 'lora', kind: 'boolean', description: 'LoRA with default settings (see --lora-*)' });
      walk(inner.shape as Record<string, z.ZodType>, path, out);
      continue;
    }
    const raw = path.join('-').replace(/_/g, '-');
    const flag = FLAG_ALIASES[raw] ?? raw;
    const spec: FlagSpec = { path, flag, kind: 'string', description: describe(field) };
    if (inner instanceof z.ZodNumber) spec.kind = 'number';
    else if (inner instanceof z.ZodBoolean) spec.kind = 'boolean';
    else if (inner instanceof z.ZodEnum) Object.assign(spec, { kind: 'enum', choices: inner.options.map(String) });
    else if (inner instanceof z.ZodArray) spec.kind = 'list';
    else if (inner instanceof z.ZodRecord) spec.kind = 'record';
    out.push(spec);
  }
}

let table: FlagSpec[] | undefined;
/** Every config key as a flag. */
export function flagTable(): FlagSpec[] {
  if (!table) {
    table = [];
    walk(ConfigSchema.shape as unknown as Record<string, z.ZodType>, [], table);
  }
  return table;
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] as number;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] as number;
      d[j] = Math.min((d[j] as number) + 1, (d[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] as number;
}

export function nearest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    // A key that starts the other ('rank' → 'r') counts as one edit away.
    const dist = word.startsWith(c) || c.startsWith(word) ? Math.min(1, levenshtein(word, c)) : levenshtein(word, c);
    if (dist < bestD) [best, bestD] = [c, dist];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function keysAt(path: PropertyKey[]): string[] {
  let shape = ConfigSchema.shape as unknown as Record<string, z.ZodType>;
  for (const p of path) {
    const next = shape[String(p)];
    const inner = next ? unwrap(next) : undefined;
    if (!(inner instanceof z.ZodObject)) return [];
    shape = inner.shape as Record<string, z.ZodType>;
  }
  return Object.keys(shape);
}

/**
 * The names people bring from transformers' TrainingArguments, TRL's
 * SFTConfig, PEFT and Axolotl, by the config path they sit at: edit
 * distance cannot find `lr` from `learning_rate`.
 */
const FOREIGN_KEYS: Record<string, Record<string, string>> = {
  '': {
    learning_rate: 'lr',
    num_train_epochs: 'epochs',
    num_epochs: 'epochs',
    gradient_accumulation_steps: 'grad_accum',
    lr_scheduler_type: 'schedule',
    lr_scheduler: 'schedule',
    per_device_train_batch_size: 'batch_size',
    train_batch_size: 'batch_size',
    micro_batch_size: 'batch_size',
    max_seq_length: 'max_length',
    max_seq_len: 'max_length',
    sequence_len: 'max_length',
    model_max_length: 'max_length',
    warmup_ratio: 'warmup_steps|a number of steps, ratio × total steps',
    model_name_or_path: 'model',
    base_model: 'model',
    chat_template: 'template',
    save_steps: 'checkpoint_every',
    eval_steps: 'eval.every_steps',
    train_file: 'data.train',
    dataset_path: 'data.train',
    validation_file: 'data.eval',
    eval_file: 'data.eval',
    assistant_only_loss: 'train_on|train_on: assistant is the default',
    completion_only_loss: 'train_on|train_on: assistant is the default',
    lora_r: 'lora.r',
    lora_alpha: 'lora.alpha',
    lora_dropout: 'lora.dropout',
    lora_target_modules: 'lora.targets',
    target_modules: 'lora.targets',
    max_new_tokens: 'eval.max_new_tokens',
  },
  lora: { lora_r: 'r', lora_alpha: 'alpha', lora_dropout: 'dropout', target_modules: 'targets', lora_target_modules: 'targets' },
  eval: { eval_steps: 'every_steps' },
};

/** The chatsft key for a name from another trainer's config, if it is one. */
export function foreignKey(path: string, key: string): string | undefined {
  return FOREIGN_KEYS[path]?.[key];
}

function formatIssues(issues: z.core.$ZodIssue[], fromFlags: Map<string, string> = new Map()): string {
  const lines: string[] = [];
  for (const issue of issues) {
    const at = issue.path.map(String).join('.');
    const flag = fromFlags.get(at);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const foreign = foreignKey(at, key);
        if (foreign) {
          const [name, note] = foreign.split('|');
          lines.push(
            `${at ? `${at}.` : ''}${key}: unknown key (did you mean '${name}'? chatsft's name for ${key} of transformers/TRL/PEFT configs${note ? `; ${note}` : ''})`,
          );
          continue;
        }
        const hint = nearest(key, keysAt(issue.path));
        lines.push(`${at ? `${at}.` : ''}${key}: unknown key${hint ? ` (did you mean '${hint}'?)` : ''}`);
      }
    } else {
      // A value given as a flag is named as the user typed it.
      lines.push(`${at || '(config)'}: ${issue.message}${flag ? ` (from ${flag})` : ''}`);
    }
  }
  return lines.join('\n');
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const p of path.slice(0, -1)) {
    const next = cur[p];
    if (next === undefined || next === null || typeof next !== 'object') cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[path[path.length - 1] as string] = value;
}

/** Turn a flag's string value into the config value, or explain why not. */
function coerce(spec: FlagSpec, value: string | boolean): unknown {
  if (spec.kind === 'boolean') return value === true || value === 'true' || value === '1' || value === 'yes';
  if (typeof value === 'boolean') return value;
  if (spec.kind === 'number') {
    const n = Number(value);
    return Number.isFinite(n) && value.trim() !== '' ? n : value;
  }
  if (spec.kind === 'list')
    return value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  if (spec.kind === 'record') {
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value;
    }
  }
  return value;
}

export interface LoadConfigInput {
  file?: string;
  /** Flag values by flag name without dashes ('max-length': '512'). */
  flags?: Record<string, string | boolean | undefined>;
}

export function readConfigFile(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new ChatsftError('FILE_MISSING', 'config file not found', file);
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    const os = userErrorFromOs(e, file);
    if (os !== e) throw os;
    throw new ChatsftError('CONFIG_INVALID', `not valid YAML: ${(e as Error).message}`, file);
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ChatsftError('CONFIG_INVALID', 'expected a mapping of keys', file);
  return raw as Record<string, unknown>;
}

export function loadConfig(input: LoadConfigInput = {}): SftConfig {
  const raw: Record<string, unknown> = input.file ? readConfigFile(input.file) : {};
  const fromFlags = new Map<string, string>();
  for (const spec of flagTable()) {
    const v = input.flags?.[spec.flag];
    if (v === undefined) continue;
    fromFlags.set(spec.path.join('.'), typeof v === 'string' ? `--${spec.flag} '${v}'` : `--${spec.flag}`);
    if (spec.flag === 'lora') {
      if (coerce(spec, v) && raw['lora'] === undefined) raw['lora'] = {};
      continue;
    }
    setPath(raw, spec.path, coerce(spec, v));
  }
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) throw new ChatsftError('CONFIG_INVALID', `\n${formatIssues(parsed.error.issues, fromFlags)}`, input.file ?? 'flags');
  return parsed.data;
}
