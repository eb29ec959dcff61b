/** Safetensors lives in src/model/safetensors.ts (no TensorFlow); the engine re-exports it. */
export type { StDtype, StTensor, StEntry, WeightIndex, TensorSpec, WriteDtype } from '../model/safetensors.js';
export { openSafetensors, openWeights, readF32, readRaw, readSafetensors, readSafetensorsDir, writeSafetensors, writeSafetensorsStream, isFloatDtype } from '../model/safetensors.js';
