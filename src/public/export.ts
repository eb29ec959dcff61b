/**
 * `chatsft/export`: a trained folder → a Hugging Face folder or a GGUF file,
 * with the EOT among the stop ids. No TensorFlow.js.
 *
 *   import { exportHf, exportGguf } from 'chatsft/export';
 */
export { exportGguf, type GgufExportOptions, type GgufExportResult } from '../export/gguf.js';
export { exportHf, findAdapter, type HfExportOptions, type HfExportResult } from '../export/hf.js';
export { discoverEot, type DiscoveredEot } from '../model/eot.js';
export { stopIdsFor, type StopIdSources } from '../hf/stop_ids.js';
