/**
 * `doctor --engine torch`: is the PyTorch worker's runtime ready? The
 * python, the torch version, the device (CUDA name and memory, or CPU
 * threads) and bf16 support; a missing or too-old torch is one error with
 * the install hint.
 */
import { INSTALL_HINT, probeTorch } from '../../torch/python.js';
import type { Finding } from '../types.js';

export function checkTorchEngine(python?: string): Finding[] {
  const info = probeTorch(python);
  const evidence = { python: info.executable, python_version: info.python || null, torch: info.torch };
  if (info.torch === null) {
    return [
      {
        code: 'ENGINE_UNAVAILABLE',
        severity: 'error',
        message: `--engine torch: ${info.executable} cannot import torch (${info.error ?? 'unknown error'})`,
        evidence,
        hint: INSTALL_HINT,
      },
    ];
  }
  if (info.torch_ok === false) {
    return [
      {
        code: 'ENGINE_UNAVAILABLE',
        severity: 'error',
        message: `--engine torch needs PyTorch >= 1.13; ${info.executable} has ${info.torch}`,
        evidence,
        hint: INSTALL_HINT,
      },
    ];
  }
  const device = info.cuda
    ? `${info.device_count ?? 1} × ${info.device_name ?? 'CUDA'} (${info.memory_gb ?? '?'} GB)`
    : `CPU, ${info.threads ?? '?'} threads of ${info.cpus ?? '?'} cores`;
  const findings: Finding[] = [
    {
      code: 'ENGINE_READY',
      severity: 'info',
      message: `--engine torch: torch ${info.torch} on ${device}; bf16 autocast ${info.bf16 ? 'yes' : 'no'}; DDP ${info.distributed ? (info.cuda ? 'nccl' : 'gloo') : 'unavailable'}`,
      evidence: {
        ...evidence,
        device: info.device ?? 'cpu',
        device_name: info.device_name ?? null,
        device_count: info.device_count ?? 0,
        memory_gb: info.memory_gb ?? null,
        bf16: Boolean(info.bf16),
        sdpa: Boolean(info.sdpa),
        distributed: Boolean(info.distributed),
      },
      hint: '',
    },
  ];
  if (!info.cuda) {
    findings.push({
      code: 'ENGINE_CPU_ONLY',
      severity: 'warning',
      message: '--engine torch will train on the CPU (no CUDA device visible): fine for small models, far too slow for 7B',
      evidence: { cpus: info.cpus ?? null, threads: info.threads ?? null },
      hint: 'on a GPU machine install a CUDA build of torch (pip install torch); on CPU also install libopenblas0-pthread (Debian) so matmuls are not 20× slower',
    });
  }
  return findings;
}
