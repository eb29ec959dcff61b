/** Safetensors lives in src/hf/safetensors.ts (no TensorFlow); the engine re-exports it. */
export type { StDtype, StTensor, StEntry, WeightIndex, TensorSpec, WriteDtype } from '../hf/safetensors.js';
export {
  openSafetensors,
  openWeights,
  readF32,
  readRaw,
  readSafetensors,
  readSafetensorsDir,
  writeSafetensors,
  writeSafetensorsStream,
  isFloatDtype,
} from '../hf/safetensors.js';
