/**
 * `chatsft/engine`: the embedded TensorFlow.js engine and what runs on it —
 * models, training, generation, evaluation. Importing this loads TF.js.
 *
 *   import { initEngine, loadModel, runTraining } from 'chatsft/engine';
 */
export {
  initEngine,
  loadModel,
  saveModel,
  createModel,
  readSafetensors,
  writeSafetensors,
  type EngineOptions,
  type LlamaModel,
  type LlamaConfig,
} from '../engine/index.js';
export {
  runTraining,
  loadOrCreateModel,
  readMetrics,
  stopRateCurve,
  type TrainOptions,
  type TrainResult,
  type StepEvent,
  type MetricsLine,
  type StopRatePoint,
} from '../train/index.js';
export { trainFromConfig } from '../train/from-config.js';
export { engineStepModel, engineNoCacheStepModel } from '../generate/index.js';
export {
  evaluateModel,
  evalPrompts,
  engineGenerateBatch,
  chatRuntime,
  setupForInference,
  type EvalReport,
  type EvaluateOptions,
  type GenerateBatch,
  type ChatRuntime,
} from '../eval/index.js';
