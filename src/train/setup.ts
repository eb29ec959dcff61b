/** Model loading for a run: pretrained weights when the folder has them, else a seeded random init. */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { createModel, loadModel, parseLlamaConfig, readLlamaConfig, type LlamaModel } from '../engine/index.js';

/**
 * `modelDir` with *.safetensors → those weights; otherwise a fresh model
 * from `modelConfig` (a config.json path or object) or `modelDir/config.json`.
 */
export function loadOrCreateModel(modelDir: string | undefined, modelConfig: string | Record<string, unknown> | undefined, seed: number): { model: LlamaModel; pretrained: boolean } {
  const hasWeights = modelDir !== undefined && fs.existsSync(modelDir) && fs.readdirSync(modelDir).some((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json');
  if (hasWeights && modelConfig === undefined) return { model: loadModel(modelDir), pretrained: true };
  if (modelConfig !== undefined) {
    const config = typeof modelConfig === 'string' ? readLlamaConfig(modelConfig) : parseLlamaConfig(modelConfig, 'model_config');
    return { model: createModel(config, seed), pretrained: false };
  }
  const cfgFile = modelDir ? path.join(modelDir, 'config.json') : undefined;
  if (cfgFile && fs.existsSync(cfgFile)) return { model: createModel(readLlamaConfig(cfgFile), seed), pretrained: false };
  throw new ChatsftError('FILE_MISSING', 'no weights (*.safetensors) and no config.json to start from; set model_config', modelDir);
}
