/** `chatsft train`'s library surface. */
export { runTraining } from './loop.js';
export type { StepEvent, TrainHyperParams, TrainOptions, TrainResult } from './types.js';
export { batches, countSupervisedEot } from './data.js';
export { lossCurveSvg, readMetrics, stopRateCurve, type MetricsLine, type StopRatePoint } from './metrics.js';
export { loadOrCreateModel } from './setup.js';
