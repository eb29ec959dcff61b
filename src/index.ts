/**
 * chatsft's public API, re-exported by name. Stages pass plain data:
 * data → template → tokenize → labels → batch → train → generate → eval,
 * plus doctor and export. Internals are not imported from outside their folder.
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
export { buildLabels, checkInvariants, type Labelled, type Turn } from './labels/build.js';
export { createEncoder, type Encoder, type EncodeOptions, type EncodeResult, type EncodedExample, type Truncation } from './labels/encode.js';

// Batches (SPEC §4) and prepared shards (SPEC §5)
export { IGNORE_INDEX, type Batch, type Example, type Row } from './batch/types.js';
export { collate, countTargets, hfLmCollatorLabels, type CollateOptions } from './batch/collate.js';
export { packExamples } from './batch/pack.js';
export { prepareRows, prepareToDir, processFile, type Manifest, type SplitStats } from './prepare/prepare.js';
export { readShards, writeShard, type ShardFormat } from './prepare/shards.js';

// Inspect and doctor (SPEC §7)
export { buildView, renderHtml, renderTerminal, type InspectView } from './inspect/view.js';
export { runDoctor, formatReport, type DoctorOptions, type DoctorReport, type Finding, type FindingCode } from './doctor/index.js';

// Engine, training, generation, evaluation (SPEC §8, §9)
export { initEngine, loadModel, saveModel, createModel, readSafetensors, writeSafetensors, type LlamaModel, type LlamaConfig } from './engine/index.js';
export { runTraining, loadOrCreateModel, type TrainOptions, type TrainResult } from './train/index.js';
export { generate, stopIdsFor, engineStepModel, type StepModel, type RowResult, type GenerateOptions } from './generate/index.js';
export { stopRateMetrics } from './eval/metrics.js';

// Export (SPEC §9)
export { exportGguf, type GgufExportOptions, type GgufExportResult } from './export/gguf.js';
export { exportHf, type HfExportOptions } from './export/hf.js';
