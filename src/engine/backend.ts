/**
 * One-time TensorFlow.js initialisation. Prefers `@tensorflow/tfjs-node`
 * when a user has it installed (native TensorFlow, multithreaded); otherwise
 * the wasm backend (XNNPACK + SIMD), whose binary is loaded from the
 * package's dist folder on disk because Node cannot fetch relative URLs.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { registerWasmKernelFixes } from './wasm_kernels.js';

export { tf };

let ready: Promise<{ backend: string }> | undefined;

async function tryTfjsNode(): Promise<boolean> {
  // The module name is in a variable so TypeScript does not need its types
  // and a missing package is a runtime fallback, not a build error.
  const name = '@tensorflow/tfjs-node';
  try {
    await import(name);
    return tf.findBackend('tensorflow') !== null && (await tf.setBackend('tensorflow'));
  } catch {
    return false;
  }
}

async function initWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const wasmFile = require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm');
  // Without the second argument emscripten reads the file with fs in Node.
  wasm.setWasmPaths(path.dirname(wasmFile) + path.sep);
  const ok = await tf.setBackend('wasm');
  if (!ok) throw new ChatsftError('ENGINE_ERROR', 'could not initialise the tfjs wasm backend');
  registerWasmKernelFixes();
}

/**
 * Initialise the engine once per process. `CHATSFT_BACKEND=wasm|cpu|tensorflow`
 * forces a backend (tests use it to compare backends).
 */
export function initEngine(): Promise<{ backend: string }> {
  ready ??= (async () => {
    const forced = process.env['CHATSFT_BACKEND'];
    if (forced === 'cpu') {
      await tf.setBackend('cpu');
    } else if (forced === 'wasm' || !(await tryTfjsNode())) {
      await initWasm();
    }
    await tf.ready();
    return { backend: tf.getBackend() };
  })();
  return ready;
}
