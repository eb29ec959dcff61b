/**
 * chatsft's public API, re-exported by name. Stages pass plain data:
 * data → template → tokenize → labels → batch → train → generate → eval,
 * plus doctor and export. Internals are not imported from outside their folder.
 *
 * Three entry points (package.json `exports`), so a user who only prepares
 * data never loads TensorFlow.js:
 *   chatsft          the pipeline up to shards, doctor, inspect, the metrics (no TF.js; a test checks it)
 *   chatsft/engine   the embedded engine: models, training, generation, evaluation (src/public/engine.ts)
 *   chatsft/export   HF folder and GGUF export (src/public/export.ts; no TF.js either)
 */

// Errors
export { ChatsftError, isChatsftError, type ErrorCode } from './errors.js';

// Config (SPEC §6)
export { ConfigSchema, LoraSchema, type SftConfig, type LoraConfig } from './config/schema.js';
export { loadConfig, flagTable, type FlagSpec, type LoadConfigInput } from './config/load.js';

// Model folders and data
export { loadModelFolder, generationEosIds, type ModelFolder, type PaddingSide } from './model/folder.js';
export { saveTokenizerFiles, stopIdsOf } from './model/save.js';
export { parseLine, readConversations, type Conversation, type Message, type Role, type DataIssue } from './data/conversations.js';
export { readLines, type RawLine } from './data/read.js';
export { formatDataReport, type DataReport } from './data/report.js';

// Templates, tokenizer setup, labels (SPEC §4)
export { compileTemplate, renderChat, CHATML_TEMPLATE, type ChatTemplate } from './template/render.js';
export { renderWithSpans, type AssistantSpan, type RenderedChat } from './template/spans.js';
export { setupTokenizer, type TokenizerSetup, type SetupOptions, type TrainOn, type PadChoice } from './tokenize/setup.js';
export { buildLabels, checkInvariants } from './labels/build.js';
export { IGNORE_INDEX, TEMPLATE_REASONS, type DropReason, type LabelledExample, type Turn } from './labels/types.js';
export { probeTemplate, type TemplateProbe, type TurnClosing, type ClosingKind } from './template/probe.js';
export {
  createEncoder,
  type Encoder,
  type EncodeOptions,
  type EncodeResult,
  type EncodedExample,
  type Truncation,
} from './labels/encode.js';

// Batches (SPEC §4) and prepared shards (SPEC §5)
export { type Batch, type Example, type Row } from './batch/types.js';
export { collate, countTargets, hfLmCollatorLabels, type CollateOptions } from './batch/collate.js';
export { packExamples } from './batch/pack.js';
export { prepareRows, prepareToDir, processFile, type Manifest, type SplitStats } from './prepare/prepare.js';
export { readShards, writeShard, type ShardFormat } from './prepare/shards.js';

// Inspect and doctor (SPEC §7)
export { buildView, renderHtml, renderTerminal, type InspectView } from './inspect/view.js';
export { runDoctor, formatReport, type DoctorOptions, type DoctorReport, type Finding, type FindingCode } from './doctor/index.js';

// Generation on ids, stop ids and stop-rate metrics (SPEC §8, §9): plain functions, no engine
export { generate, type AsyncStepModel } from './generate/loop.js';
export type { StepModel, RowResult, GenerateOptions } from './generate/types.js';
export { stopIdsFor, type StopIdSources } from './hf/stop_ids.js';
export { stopRateMetrics, type StopRateMetrics } from './eval/metrics.js';
export { summarizeGenerations, type StopRateSummary } from './eval/stop_rate.js';
export { readManifest, checkManifest, ManifestSchema, type ParsedManifest } from './prepare/manifest.js';
