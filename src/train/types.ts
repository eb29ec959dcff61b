/** Plain options and results of a training run (the CLI maps its config onto these). */
import type { Row } from '../batch/types.js';
import type { LlamaModel, LoraSpec, StepTick } from '../engine/index.js';
import type { StopRateSummary } from '../eval/stop_rate.js';
import type { StopRatePoint } from './metrics.js';

export interface TrainHyperParams {
  lr: number;
  weightDecay: number;
  warmupSteps: number;
  schedule: 'cosine' | 'constant';
  maxGradNorm: number;
  batchSize: number;
  gradAccum: number;
  /** Passes over `rows` (default 1); ignored when maxSteps is set. */
  epochs?: number;
  maxSteps?: number;
  seed: number;
}

export interface StepEvent {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Supervised tokens of the step. */
  tokens: number;
  /** Non-padding input tokens of the step (what tokensPerSecond counts). */
  inputTokens: number;
  /** All tokens (incl. prompt, excl. padding) per second of this step. */
  tokensPerSecond: number;
  evalLoss?: number;
  /** Stop rate on the held-out prompts, at evaluation steps. */
  stopRate?: number;
}

export interface TrainOptions {
  /** The model to train, loaded or created (and resized) by the caller. */
  model: LlamaModel;
  rows: Row[];
  evalRows?: Row[];
  padId: number;
  paddingSide: 'left' | 'right';
  /** Ids that close an assistant turn; a run whose rows supervise none is refused. */
  eotIds: number[];
  allowNoEot?: boolean;
  hp: TrainHyperParams;
  /** LoRA instead of full fine-tuning. */
  lora?: LoraSpec | null;
  /** Eval loss every N steps (0: only at the end, when evalRows are given). */
  evalEverySteps?: number;
  /**
   * Stop rate on held-out prompts, called at each evaluation (every
   * evalEverySteps and at the end): the caller generates (either engine),
   * the loop records the result in metrics.jsonl.
   */
  measureStopRate?: () => Promise<StopRateSummary | null>;
  /** Checkpoint every N steps (0: none; the final model is always saved). */
  checkpointEvery?: number;
  outputDir: string;
  /** Continue from `outputDir/checkpoint` when it exists. */
  resume?: boolean;
  /** Recorded in the PEFT adapter config. */
  baseModelPath?: string | null;
  onStep?: (e: StepEvent) => void;
  /** Progress inside step `step` (1-based) while it runs: micro-batch and, layer-wise, decoder-layer ticks. */
  onStepProgress?: (e: StepProgressEvent) => void;
  onLog?: (line: string) => void;
  /**
   * Called with the finished model folder (weights + config.json written):
   * the place to write tokenizer files and generation_config.json.
   */
  finalizeFolder?: (dir: string) => void | Promise<void>;
  /** Dtype of the saved model.safetensors (default F32; a LoRA run on a bf16 base saves BF16, as merging in PEFT would). */
  saveDtype?: 'F32' | 'F16' | 'BF16';
  /** Stop (as if killed) after this many steps, without the final save; for tests. */
  stopAfterSteps?: number;
}

export interface StepProgressEvent extends StepTick {
  step: number;
  totalSteps: number;
}

export interface TrainResult {
  steps: number;
  /** Training loss per step (mean CE over supervised tokens). */
  losses: number[];
  finalLoss: number;
  evalLoss: number | null;
  /** Stop rate at each evaluation that measured one (metrics.jsonl), in step order. */
  stopRates: StopRatePoint[];
  /** Stop rate of a pretrained model before training (trainFromConfig), null when not measured. */
  stopRateAtStart?: number | null;
  /** The one-line warning when a model that stopped ends stopping much less often. */
  stopRateWarning?: string | null;
  seconds: number;
  tokensPerSecond: number;
  outputDir: string;
  /** Supervised EOT positions found in the training rows. */
  supervisedEot: number;
  resumedFrom: number | null;
}
