/**
 * Multithreaded tfjs-wasm in Node. tfjs 4.22 switches threads off in Node
 * (tfjs issue #3830) because emscripten's pthread workers are created from
 * `blob:` URLs, which Node's Worker rejects. Here the two scripts involved
 * (the worker and the module factory it imports) are written to a temp
 * folder while the backend initialises, and Blob / URL.createObjectURL are
 * patched only for that window. XNNPACK also caps its pool at
 * os.cpus().length / 2 (it assumes hyper-threading), so os.cpus is widened
 * for the same window. Measured on the 2-core machine, idle: 1024³ matMul
 * 28 → 52 GFLOPS; the 19.5 M-parameter training step 7.8 → 5.2 s. Opt-in
 * (CHATSFT_WASM_THREADS=N): the pool's threads spin while idle, which slows
 * several concurrent processes down.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Globals the bundle's factory expects when its source runs as a plain script. */
const FACTORY_PRELUDE =
  "var require$$0 = require('fs'), require$$1 = require('path'), require$$3 = require('perf_hooks'), require$$4 = require('os'), commonjsGlobal = globalThis;\n";

/**
 * Run `init` (which must set the wasm backend) with the patches in place;
 * everything is restored afterwards, whatever happens.
 */
export async function withWasmThreadPatches<T>(threads: number, init: () => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatsft-wasm-threads-'));
  // Workers read these files when they load; remove them when the process ends.
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const mainFile = path.join(dir, 'factory.js');
  const OrigBlob = globalThis.Blob;
  const origCreate = URL.createObjectURL;
  const origCpus = os.cpus;
  const texts = new WeakMap<Blob, string>();
  class RecordingBlob extends OrigBlob {
    constructor(parts?: ConstructorParameters<typeof Blob>[0], options?: ConstructorParameters<typeof Blob>[1]) {
      super(parts ?? [], options);
      if (parts && parts.every((p) => typeof p === 'string')) {
        const text = (parts as string[]).join('');
        texts.set(this, text);
        if (text.startsWith('var WasmBackendModuleThreadedSimd')) fs.writeFileSync(mainFile, FACTORY_PRELUDE + text);
      }
    }
  }
  globalThis.Blob = RecordingBlob as typeof Blob;
  URL.createObjectURL = (obj: Blob): string => {
    const text = texts.get(obj);
    if (text === undefined) return origCreate(obj);
    // The worker script; inside the worker, the factory "blob" resolves to the file.
    const workerFile = path.join(dir, 'worker.js');
    fs.writeFileSync(workerFile, `URL.createObjectURL = () => ${JSON.stringify(mainFile)}; URL.revokeObjectURL = () => {};\n${text}`);
    return workerFile;
  };
  const real = origCpus();
  const widened = Array.from({ length: Math.max(2 * threads, real.length) }, (_, i) => real[i % real.length]!);
  (os as { cpus: () => os.CpuInfo[] }).cpus = () => widened;
  // emscripten unref()s its workers while they load: without a ref'd handle
  // Node may consider the event loop done before the backend resolves.
  const keepAlive = setInterval(() => {}, 1000);
  try {
    return await init();
  } finally {
    clearInterval(keepAlive);
    globalThis.Blob = OrigBlob;
    URL.createObjectURL = origCreate;
    (os as { cpus: () => os.CpuInfo[] }).cpus = origCpus;
  }
}
