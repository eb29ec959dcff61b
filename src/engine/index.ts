/** The engine's public surface; other modules import from here only. */
export { initEngine, tf, type EngineOptions } from './backend.js';
export type { StDtype, StTensor } from './safetensors.js';
export { openWeights, readSafetensors, readSafetensorsDir, writeSafetensors, writeSafetensorsStream } from './safetensors.js';
export type { LlamaConfig, ModelType, RopeScalingLlama3 } from '../hf/config.js';
export { checkSlidingWindow, makeLlamaConfig, parseLlamaConfig, readLlamaConfig, toHfConfig } from '../hf/config.js';
export type { ForwardOptions, LlamaModel, LoraSpec, LoraState, OnStepTick, StepTick } from './types.js';
export type { LoadOptions } from './model.js';
export {
  checkWeights,
  countParameters,
  createModel,
  initialTensors,
  disposeModel,
  exportTensors,
  expectedShapes,
  hfTensor,
  loadModel,
  modelFromTensors,
  resizeTokenEmbeddings,
  saveModel,
  storedDtype,
} from './model.js';
export { countSupervised, evalLoss, logits, lossForGrad, supervisedTargets } from './forward.js';
export type { KvCache } from './infer.js';
export { createKvCache, disposeKvCache, forwardWithCache } from './infer.js';
export { LORA_TARGETS, addLora, loraDelta, mergedTensor, mergedTensors, saveAdapter, trainableVariables } from './lora.js';
export type { AdamWOptions, AdamWState, Schedule } from './optim.js';
export { ADAMW_DEFAULTS, adamWUpdate, clipGradients, createAdamW, disposeAdamW, globalNorm, lrAt } from './optim.js';
export type { GradResult, StepResult } from './step.js';
export { accumulateGradients, trainStep } from './step.js';
export { Rng } from './rng.js';
