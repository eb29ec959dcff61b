/**
 * Finding and checking the Python that runs the torch worker. Everything
 * the user sees is one ChatsftError with the install hint; Python's own
 * output goes nowhere near the screen.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatsftError } from '../errors.js';

/** The worker package shipped with chatsft (`python/chatsft_worker`). */
export const WORKER_PATH = fileURLToPath(new URL('../../../python', import.meta.url));

export const INSTALL_HINT =
  'install PyTorch >= 1.13 for that Python: on Debian/Ubuntu `apt-get install python3-torch libopenblas0-pthread` (then use --python /usr/bin/python3), ' +
  'or `pip install torch` (https://pytorch.org/get-started/locally/ for CUDA builds)';

export interface TorchInfo {
  python: string;
  executable: string;
  torch: string | null;
  torch_ok?: boolean;
  cuda?: boolean;
  device?: 'cuda' | 'cpu';
  device_name?: string;
  device_count?: number;
  bf16?: boolean;
  memory_gb?: number;
  sdpa?: boolean;
  distributed?: boolean;
  threads?: number;
  cpus?: number;
  error?: string;
}

/**
 * The interpreter: --python, else CHATSFT_PYTHON, else /usr/bin/python3 when it
 * exists (Debian's python3-torch lives there; a pyenv `python3` on PATH often
 * lacks torch), else `python3`.
 */
export function defaultPython(): string {
  if (process.env['CHATSFT_PYTHON']) return process.env['CHATSFT_PYTHON'];
  return fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

export function workerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const pp = process.env['PYTHONPATH'];
  return {
    ...process.env,
    PYTHONPATH: pp ? `${WORKER_PATH}${path.delimiter}${pp}` : WORKER_PATH,
    // Idle OpenMP threads otherwise spin against OpenBLAS's (ENGINE-NOTES: 1.30 vs 2.0 s/step).
    OMP_WAIT_POLICY: process.env['OMP_WAIT_POLICY'] ?? 'PASSIVE',
    PYTHONUNBUFFERED: '1',
    ...extra,
  };
}

/** Run the worker's probe; never throws (a missing interpreter is reported in `error`). */
export function probeTorch(python = defaultPython()): TorchInfo {
  const r = spawnSync(python, ['-m', 'chatsft_worker', 'probe'], { env: workerEnv(), encoding: 'utf8', timeout: 120_000 });
  if (r.error) return { python: '', executable: python, torch: null, error: `cannot run ${python}: ${r.error.message}` };
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return { ...(JSON.parse(line) as TorchInfo), executable: python };
  } catch {
    const err = (r.stderr ?? '').trim().split('\n').pop() ?? `exit code ${r.status}`;
    return { python: '', executable: python, torch: null, error: err };
  }
}

/** The probe, or one ENGINE_UNAVAILABLE error saying what is missing and how to install it. */
export function requireTorch(python = defaultPython()): TorchInfo {
  const info = probeTorch(python);
  if (info.torch === null) {
    throw new ChatsftError(
      'ENGINE_UNAVAILABLE',
      `--engine torch needs PyTorch, but ${python} cannot import it (${info.error ?? 'unknown error'}); ${INSTALL_HINT}`,
      '--python',
    );
  }
  if (info.torch_ok === false) {
    throw new ChatsftError(
      'ENGINE_UNAVAILABLE',
      `--engine torch needs PyTorch >= 1.13, ${python} has ${info.torch}; ${INSTALL_HINT}`,
      '--python',
    );
  }
  return info;
}
