/** Stop-rate evaluation: prompts from held-out conversations, any batch generator, metrics. */
export {
  evaluateModel,
  evalPrompts,
  engineGenerateBatch,
  meanLoss,
  decodeIds,
  type EvalReport,
  type EvalRow,
  type EvalPrompt,
  type EvaluateOptions,
  type GenerateBatch,
} from './evaluate.js';
export { chatRuntime, encodeText, promptIds, setupForInference, type ChatRuntime } from './runtime.js';
export { templateEotIds } from '../model/eot.js';
export {
  stopRateMetrics,
  classifyEnding,
  containsSequence,
  percentile,
  type GenerationOutcome,
  type StopRateMetrics,
  type StopRateOptions,
  type Ending,
} from './metrics.js';
