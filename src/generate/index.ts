/** Generation on token ids: the loop, sampling, stop ids, PRNG. */
export type { StepModel, RowResult, TokenEvent, GenerateOptions } from './types.js';
export { generate, type AsyncStepModel } from './loop.js';
export { argmax, sampleToken, type SamplingParams } from './sampling.js';
export { stopIdsFor, type StopIdSources } from '../hf/stop_ids.js';
export { noCacheStepModel } from './no_cache.js';
export { createRng, mixSeed, type Rng } from './rng.js';
export { engineStepModel, engineNoCacheStepModel } from './engine.js';
