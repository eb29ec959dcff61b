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
import { withWasmThreadPatches } from './wasm_threads.js';

export { tf };

let ready: Promise<{ backend: string }> | undefined;

/**
 * A variable that takes over `init`: tf.variable shares init's data and
 * leaves init itself alive, so init is disposed here (else 1 leak each).
 */
export function variableFrom(init: tf.Tensor, trainable: boolean, name?: string): tf.Variable {
  const v = tf.variable(init, trainable, name);
  init.dispose();
  return v;
}

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

async function initWasm(threads: number): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const wasmFile = require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm');
  // Without the second argument emscripten reads the file with fs in Node.
  wasm.setWasmPaths(path.dirname(wasmFile) + path.sep);
  let ok: boolean;
  if (threads > 1) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    wasm.setThreadsCount(threads);
    ok = await withWasmThreadPatches(threads, () => tf.setBackend('wasm'));
    // XNNPACK's pool threads run for the life of the process; emscripten
    // ref()s their workers, which would keep Node from ever exiting.
    const module = (tf.backend() as unknown as { wasm?: { PThread?: { runningWorkers: { unref(): void }[] } } }).wasm;
    module?.PThread?.runningWorkers.forEach((w) => w.unref());
  } else {
    ok = await tf.setBackend('wasm');
  }
  if (!ok) throw new ChatsftError('ENGINE_ERROR', 'could not initialise the tfjs wasm backend');
  registerWasmKernelFixes();
}

/** Threads of the wasm backend's XNNPACK pool (0 on other backends). */
export async function wasmThreads(): Promise<number> {
  if (tf.getBackend() !== 'wasm') return 0;
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  return wasm.getThreadsCount();
}

export interface EngineOptions {
  /**
   * Threads of the wasm backend (1..8; 1 = no worker threads at all). Default:
   * the user's `CHATSFT_WASM_THREADS`, else 1. The library never writes the
   * environment: callers that choose a count pass it here.
   */
  wasmThreads?: number;
}

/**
 * Initialise the engine once per process; the first call's options decide
 * (the backend cannot be re-initialised). `CHATSFT_BACKEND=wasm|cpu` forces a
 * backend.
 */
export function initEngine(opts: EngineOptions = {}): Promise<{ backend: string }> {
  ready ??= (async () => {
    const forced = process.env['CHATSFT_BACKEND'];
    if (forced === 'cpu') {
      await tf.setBackend('cpu');
    } else if (forced === 'wasm' || !(await tryTfjsNode())) {
      // Default 1: XNNPACK's pool threads spin while waiting for work, which
      // made concurrent processes (the test suite) 1.3–1.6× slower; a single
      // large training run on idle cores gains ~1.5× with CHATSFT_WASM_THREADS=2.
      const threads = opts.wasmThreads ?? Number(process.env['CHATSFT_WASM_THREADS'] ?? '1');
      if (!Number.isInteger(threads) || threads < 1 || threads > 8) {
        const given =
          opts.wasmThreads !== undefined
            ? `wasmThreads ${opts.wasmThreads}`
            : `CHATSFT_WASM_THREADS ${process.env['CHATSFT_WASM_THREADS']}`;
        ready = undefined;
        throw new ChatsftError('USAGE', `wasm threads must be an integer in 1..8, got ${given}`);
      }
      await initWasm(threads);
    }
    await tf.ready();
    return { backend: tf.getBackend() };
  })();
  return ready;
}
