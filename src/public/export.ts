/**
 * `chatsft/export`: a trained folder → a Hugging Face folder or a GGUF file,
 * with the EOT among the stop ids. No TensorFlow.js.
 *
 *   import { exportHf, exportGguf } from 'chatsft/export';
 *   EXPORTERS.gguf.export('runs/chatsft', 'model.gguf', { eotToken: '<|im_end|>', dtype: 'f16' });
 */
export { EXPORTERS, isExportFormat, type Exporter, type ExportFormat, type ExportOutcome, type ExportRequest } from '../export/exporter.js';
export { exportGguf, type GgufExportOptions, type GgufExportResult } from '../export/gguf.js';
export { exportHf, findAdapter, type HfExportOptions, type HfExportResult } from '../export/hf.js';
export { discoverEot, type DiscoveredEot } from '../model/eot.js';
export { stopIdsFor, type StopIdSources } from '../hf/stop_ids.js';
