"""The training run on PyTorch: setup → train → save, reporting JSON lines on stdout.

Events (rank 0 only, one JSON object per line):
  {"event": "ready", ...}  {"event": "resumed", "step", "losses"}
  {"event": "step", "step", "loss", "grad_norm", "seconds", "eval_loss"?}
  {"event": "stopped", "step"}  {"event": "done", "step", "eval_loss"}
  {"event": "diverged", "step", "loss", "grad_norm", "what"?}  (non-finite numbers as "NaN"/"Infinity")
  {"event": "error", "code", "message", "where"?}
Anything unexpected: the traceback goes to stderr (a log file the TypeScript
side names in its error) and an ENGINE_ERROR event is emitted.
"""
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
import traceback

RANK = int(os.environ.get("RANK", "0"))


def emit(ev):
    if RANK == 0:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


class WorkerError(Exception):
    def __init__(self, code, message, where=None):
        super().__init__(message)
        self.code, self.message, self.where = code, message, where


def probe():
    """The runtime, as doctor reports it."""
    info = {"python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count()}
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install raising anything
        info["torch"] = None
        info["error"] = f"{type(e).__name__}: {e}"
        return info
    from . import MIN_TORCH

    info["torch"] = torch.__version__
    parts = []
    for p in torch.__version__.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    info["torch_ok"] = tuple(parts) >= MIN_TORCH
    info["cuda"] = bool(torch.cuda.is_available())
    info["device"] = "cuda" if info["cuda"] else "cpu"
    if info["cuda"]:
        info["device_name"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
        info["bf16"] = bool(torch.cuda.is_bf16_supported())
        info["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["bf16"] = False
    info["sdpa"] = hasattr(torch.nn.functional, "scaled_dot_product_attention")
    info["distributed"] = bool(torch.distributed.is_available())
    info["threads"] = torch.get_num_threads()
    return info


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    if argv[:1] == ["probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) != 1:
        sys.stderr.write("usage: python -m chatsft_worker JOB.json | probe\n")
        return 2
    # SIGTERM (chatsft interrupted, or torchrun stopping its ranks) unwinds like Ctrl-C, so temps are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with open(argv[0]) as f:
            job = json.load(f)
        from .train import run

        run(job, emit, WorkerError)
        return 0
    except WorkerError as e:
        emit({"event": "error", "code": e.code, "message": e.message, **({"where": e.where} if e.where else {})})
        return 3
    except BaseException as e:  # noqa: BLE001 — everything goes to the log, one line to the user
        traceback.print_exc()
        sys.stderr.flush()
        if isinstance(e, KeyboardInterrupt):
            return 130
        emit({"event": "error", "code": "ENGINE_ERROR", "message": f"{type(e).__name__}: {e}"})
        return 4
