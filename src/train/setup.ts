/** Model loading for a run: pretrained weights when the folder has them, else a seeded random init. */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import {
  createModel,
  loadModel,
  parseLlamaConfig,
  readLlamaConfig,
  type LlamaConfig,
  type LlamaModel,
  type LoadOptions,
} from '../engine/index.js';

function hasWeights(modelDir: string | undefined): modelDir is string {
  return (
    modelDir !== undefined &&
    fs.existsSync(modelDir) &&
    fs.readdirSync(modelDir).some((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json')
  );
}

/**
 * The config a run will use, without loading anything (for the memory plan):
 * `modelConfig`, else `modelDir/config.json`; `pretrained` when weights will be loaded.
 */
export function runConfig(
  modelDir: string | undefined,
  modelConfig: string | Record<string, unknown> | undefined,
): { config: LlamaConfig; pretrained: boolean } | null {
  if (modelConfig !== undefined) {
    return {
      config: typeof modelConfig === 'string' ? readLlamaConfig(modelConfig) : parseLlamaConfig(modelConfig, 'model_config'),
      pretrained: false,
    };
  }
  const cfgFile = modelDir ? path.join(modelDir, 'config.json') : undefined;
  if (cfgFile && fs.existsSync(cfgFile)) return { config: readLlamaConfig(cfgFile), pretrained: hasWeights(modelDir) };
  return null;
}

/**
 * `modelDir` with *.safetensors → those weights; otherwise a fresh model
 * from `modelConfig` (a config.json path or object) or `modelDir/config.json`.
 * `load` passes strictness, offload and progress to loadModel.
 */
export function loadOrCreateModel(
  modelDir: string | undefined,
  modelConfig: string | Record<string, unknown> | undefined,
  seed: number,
  load: LoadOptions = {},
): { model: LlamaModel; pretrained: boolean } {
  if (hasWeights(modelDir) && modelConfig === undefined) return { model: loadModel(modelDir, load), pretrained: true };
  const rc = runConfig(modelDir, modelConfig);
  if (rc) return { model: createModel(rc.config, seed), pretrained: false };
  throw new ChatsftError('FILE_MISSING', 'no weights (*.safetensors) and no config.json to start from; set model_config', modelDir);
}
