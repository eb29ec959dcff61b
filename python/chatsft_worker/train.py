"""setup → train → save on PyTorch, mirroring src/train/loop.ts.

The TypeScript side fixed everything that decides the numbers: the rows and
their order per micro-batch (the plan), the learning rate and the loss
normaliser (supervised tokens of the whole global step) of every step, the
initial weights (or the pretrained folder), the LoRA A init. This file runs
them: per step, gradients of Σ CE / step tokens over gradAccum micro-batches,
global-norm clipping, AdamW. With several processes each takes its slice of
every global micro-batch; DDP averages gradients, so each rank's loss is
scaled by the world size to make the sum exact.
"""
import contextlib
import json
import math
import os
import shutil
import signal
import time

import torch
import torch.distributed as dist

from . import safetensors_io as st
from .data import collate, read_plan, read_rows
from .generate import greedy
from .model import build, expected_shapes
from .optim import AdamW, clip_

CHECKPOINT_DIR = "checkpoint"
# Written last into a checkpoint folder (as src/train/checkpoint.ts): without it the folder is torn.
COMPLETE_MARKER = "complete.json"


class Diverged(Exception):
    """A non-finite loss, gradient norm or weight: the run stops, nothing non-finite is saved."""

    def __init__(self, step, loss, grad_norm, what=None):
        super().__init__(what or f"diverged at step {step}")
        self.step, self.loss, self.grad_norm, self.what = step, loss, grad_norm, what


def json_float(x):
    # JSON has no NaN/Infinity (JSON.parse rejects Python's bare `NaN`): send the text JavaScript's Number() reads.
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


class Run:
    pass


def run(job, emit, WorkerError):
    r = setup(job, emit, WorkerError)
    try:
        try:
            stopped = train(r)
            if stopped:
                return
            ev, gens = evaluate_all(r)
            save_final(r, ev)
        except Diverged as d:
            # Every rank sees the same all-reduced loss and gradient norm, so all stop here together.
            emit({"event": "diverged", "step": d.step, "loss": json_float(d.loss), "grad_norm": json_float(d.grad_norm), **({"what": d.what} if d.what else {})})
            raise WorkerError("TRAINING_DIVERGED", str(d)) from None
        emit({"event": "done", "step": r.step, "eval_loss": ev, **({"generations": gens} if gens is not None else {})})
    finally:
        if r.world > 1:
            dist.destroy_process_group()


def choose_device(job):
    want = job.get("device", "auto")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return None
        return "cuda"
    return "cpu"


def setup(job, emit, WorkerError):
    r = Run()
    r.job, r.emit, r.Err = job, emit, WorkerError
    r.world = int(os.environ.get("WORLD_SIZE", "1"))
    r.rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    kind = choose_device(job)
    if kind is None:
        raise WorkerError("ENGINE_ERROR", "device: cuda was asked for but torch.cuda.is_available() is false")
    if kind == "cuda":
        torch.cuda.set_device(local)
        r.device = torch.device("cuda", local)
        # bf16 autocast where the GPU has it (Ampere+), else fp16 is not attempted: float32.
        r.autocast = torch.cuda.is_bf16_supported() and job.get("precision", "auto") != "float32"
    else:
        r.device = torch.device("cpu")
        # bf16 autocast on the CPU only when asked: it exercises the GPU's mixed-precision path in CI.
        r.autocast = job.get("precision") == "bf16"
        torch.set_num_threads(max(1, int(job.get("threads", 1))))
    if r.world > 1:
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    torch.manual_seed(int(job["seed"]) + 2 + r.rank)  # LoRA dropout only

    # Weights: frozen base weights in bf16 on a bf16 GPU under LoRA; trained weights always float32.
    lora = job.get("lora")
    base_dtype = torch.bfloat16 if (r.autocast and lora) else torch.float32
    init = job["init"]
    try:
        if init["kind"] == "folder":
            tensors = st.read_dir(init["path"], dtype=base_dtype)
        else:
            tensors, _ = st.read_file(init["path"], dtype=base_dtype)
    except (st.SafetensorsError, OSError, ValueError) as e:
        raise WorkerError("MODEL_INVALID", str(e), init["path"])
    model, problems = build(job["config"], tensors, int(job["vocab_size"]), r.device, base_dtype)
    del tensors
    if problems:
        more = f"; … {len(problems) - 10} more" if len(problems) > 10 else ""
        raise WorkerError("MODEL_INVALID", "; ".join(problems[:10]) + more, init["path"])
    model.gradient_checkpointing = bool(job.get("gradient_checkpointing", False))
    if lora:
        for p in model.parameters():
            p.requires_grad_(False)
        a_init, _ = st.read_file(lora["init"])
        for name, lin in model.lora_modules(lora["targets"]):
            lin.add_lora(a_init[f"{name}.lora_A"], lora["r"], lora["alpha"], lora["dropout"])
        ids = list(lora.get("train_token_ids") or [])
        if ids:
            model.model.embed_tokens.add_rows(ids)
            if model.lm_head is not None:
                model.lm_head.trainable_rows = torch.nn.Parameter(torch.zeros(len(ids), model.config.hidden_size, device=r.device))
    r.model = model
    r.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ad = job["adamw"]
    r.opt = AdamW(r.trainable, ad["beta1"], ad["beta2"], ad["eps"], ad["weight_decay"])
    r.rows = read_rows(job["rows"])
    r.eval_rows = read_rows(job["eval_rows"]) if job.get("eval_rows") else []
    r.total = int(job["total_steps"])
    r.plan = read_plan(job["plan"], r.total, int(job["grad_accum"]))
    r.step, r.losses = 0, []
    if job.get("resume") and os.path.exists(os.path.join(job["output_dir"], CHECKPOINT_DIR, "trainer_state.json")):
        load_checkpoint(r)
        emit({"event": "resumed", "step": r.step, "losses": r.losses})
    r.fwd = model
    if r.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        r.fwd = DDP(model, device_ids=[local] if kind == "cuda" else None, broadcast_buffers=False)
    emit(
        {
            "event": "ready",
            "device": str(r.device),
            "device_name": torch.cuda.get_device_name(local) if kind == "cuda" else "cpu",
            "autocast": "bfloat16" if r.autocast else None,
            "world_size": r.world,
            "torch": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for _, p in r.trainable),
            "gradient_checkpointing": model.gradient_checkpointing,
            "threads": torch.get_num_threads(),
        }
    )
    return r


def autocast(r):
    if r.autocast:
        return torch.autocast(r.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(r):
    job = r.job
    bs = int(job["batch_size"])  # rows per process per micro-batch
    pad, side = int(job["pad_id"]), job["padding_side"]
    every, ck = int(job.get("eval_every") or 0), int(job.get("checkpoint_every") or 0)
    stop_after = job.get("stop_after_steps")
    done_here = 0
    r.model.train()
    while r.step < r.total:
        if stop_after is not None and done_here >= int(stop_after):
            r.emit({"event": "stopped", "step": r.step})
            return True
        t0 = time.perf_counter()
        step = r.step
        micro = r.plan[step]
        norm = max(1, int(job["step_tokens"][step]))
        lr = float(job["lrs"][step])
        loss_sum = 0.0
        for i, idx in enumerate(micro):
            shard = idx[r.rank * bs : (r.rank + 1) * bs]
            # A rank whose slice of a short last micro-batch is empty still joins the all-reduce.
            rows = [r.rows[j] for j in shard] if shard else [([pad], [-100], [1])]
            b = collate(rows, pad, side, r.device)
            sync = i == len(micro) - 1 or r.world == 1
            ctx = r.fwd.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with autocast(r):
                    s = r.fwd(b["ids"], b["pos"], b["seg"], b["rows"], b["targets"])
                part = s.float() / norm
                (part * r.world).backward()
            loss_sum += float(part.detach())
        if r.world > 1:
            t = torch.tensor([loss_sum], dtype=torch.float64, device=r.device)
            dist.all_reduce(t)
            loss_sum = float(t.item())
        grad_norm = clip_(r.trainable, float(job["max_grad_norm"]))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            # Before the optimiser step: the weights stay the last finite ones.
            raise Diverged(step + 1, loss_sum, grad_norm)
        r.opt.step(lr)
        for _, p in r.trainable:
            p.grad = None
        r.step += 1
        done_here += 1
        r.losses.append(loss_sum)
        seconds = time.perf_counter() - t0
        ev, gens = evaluate_all(r) if every > 0 and r.step % every == 0 and r.step < r.total else (None, None)
        r.emit({"event": "step", "step": r.step, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm, "seconds": seconds, **({"eval_loss": ev} if ev is not None else {}), **({"generations": gens} if gens is not None else {})})
        if ck > 0 and r.step % ck == 0 and r.step < r.total:
            save_checkpoint(r)
    return False


def evaluate_all(r):
    """Eval loss and, when the job carries held-out prompts, greedy generations for the stop rate."""
    loss = evaluate(r)
    se = r.job.get("stop_eval")
    gens = None
    if se and se.get("prompts"):
        if r.rank == 0:
            gens = greedy(r.model, se["prompts"], se["stop_ids"], int(se["max_new_tokens"]), int(r.job["pad_id"]), r.device, lambda: autocast(r))
        if r.world > 1:
            dist.barrier()
    return loss, gens


@torch.no_grad()
def evaluate(r):
    """Mean CE per supervised token over the eval rows (rank 0; the others wait)."""
    if not r.eval_rows:
        return None
    out = None
    if r.rank == 0:
        r.model.eval()
        total, count = 0.0, 0
        bs = int(r.job["batch_size"])
        for i in range(0, len(r.eval_rows), bs):
            b = collate(r.eval_rows[i : i + bs], int(r.job["pad_id"]), r.job["padding_side"], r.device)
            if b["rows"].numel() == 0:
                continue
            with autocast(r):
                total += float(r.model(b["ids"], b["pos"], b["seg"], b["rows"], b["targets"]).float())
            count += b["rows"].numel()
        r.model.train()
        out = total / count if count > 0 else None
    if r.world > 1:
        dist.barrier()
    return out


def merged_tensors(r, dtype):
    """HF-named tensors with LoRA merged (W + α/r·BA) and trained rows added."""
    m = r.model
    named = dict(m.named_modules())
    out = {}
    for name in expected_shapes(m.config):
        mod_name, leaf = name.rsplit(".", 1)
        mod = named[mod_name]
        if mod_name == "model.embed_tokens":
            t = mod.merged()
        elif mod_name == "lm_head":
            t = mod.weight.detach().float().clone()
            if mod.trainable_rows is not None:
                t[m.model.embed_tokens.row_ids] += mod.trainable_rows.detach().float()
        elif leaf == "weight" and hasattr(mod, "merged_weight"):
            t = mod.merged_weight()
        else:
            t = getattr(mod, leaf).detach().float()
        out[name] = t.to(dtype).cpu()
    return out


def save_adapter(r, folder):
    """PEFT layout: adapter_model.safetensors + adapter_config.json (as src/engine/lora.ts)."""
    m, lora = r.model, r.job["lora"]
    os.makedirs(folder, exist_ok=True)
    t = {}
    for name, lin in m.lora_modules(lora["targets"]):
        t[f"base_model.model.{name}.lora_A.weight"] = lin.lora_A.detach().float().cpu()
        t[f"base_model.model.{name}.lora_B.weight"] = lin.lora_B.detach().float().cpu()
    emb = m.model.embed_tokens
    ids = list(lora.get("train_token_ids") or [])
    if emb.trainable_rows is not None:
        # PEFT's TrainableTokens stores the rows' full values, not a delta.
        t["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"] = (emb.weight.detach().float()[emb.row_ids] + emb.trainable_rows.detach().float()).cpu()
    if m.lm_head is not None and m.lm_head.trainable_rows is not None:
        t["base_model.model.lm_head.token_adapter.trainable_tokens_delta"] = (m.lm_head.weight.detach().float()[emb.row_ids] + m.lm_head.trainable_rows.detach().float()).cpu()
    st.write_file(os.path.join(folder, "adapter_model.safetensors"), t, {"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": r.job.get("base_model_path"),
        "r": lora["r"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
        "target_modules": list(lora["targets"]),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "modules_to_save": None,
        "trainable_token_indices": ({"embed_tokens": ids, **({"lm_head": ids} if m.lm_head is not None else {})} if ids else None),
    }
    write_json(os.path.join(folder, "adapter_config.json"), config)


def write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def assert_finite(r, tensors):
    """Never write a NaN or infinity over what is there: name the first offending tensor."""
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise Diverged(r.step, r.losses[-1] if r.losses else float("nan"), float("nan"), f"training diverged by step {r.step}: weight {name} has a non-finite value, so no model is written")


def save_final(r, eval_loss):
    if r.rank == 0:
        out = r.job["output_dir"]
        dtype = DTYPE_NAMES[r.job.get("save_dtype", "float32")]
        merged = merged_tensors(r, dtype)
        assert_finite(r, merged)
        st.write_model(out, merged, max_shard_bytes=int(r.job.get("max_shard_bytes", 5 * 1024**3)))
        if r.job.get("lora"):
            save_adapter(r, os.path.join(out, "adapter"))
        if int(r.job.get("checkpoint_every") or 0) > 0:
            save_checkpoint(r)
    if r.world > 1:
        dist.barrier()


def save_checkpoint(r):
    """Trainable weights + AdamW moments + trainer state (rank 0), as src/train/checkpoint.ts does:
    built in checkpoint.tmp-PID with complete.json written last, then swapped in with two renames.
    A kill between the renames leaves complete siblings that the TypeScript side's findCheckpoint
    recovers on --resume; an interrupt (SIGINT/SIGTERM) while writing removes the temp folder."""
    if r.rank != 0:
        return
    t = {}
    for n, p in r.trainable:
        t[f"param/{n}"] = p.detach().float().cpu()
        t[f"adam_m/{n}"] = r.opt.m[n].cpu()
        t[f"adam_v/{n}"] = r.opt.v[n].cpu()
    # Never checkpoint non-finite weights over the last good checkpoint.
    assert_finite(r, t)
    final = os.path.join(r.job["output_dir"], CHECKPOINT_DIR)
    tmp = f"{final}.tmp-{os.getpid()}"
    old = f"{final}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        st.write_file(os.path.join(tmp, "state.safetensors"), t, {"adam_step": r.opt.step_count, "engine": "torch"})
        state = {
            "step": r.step,
            "microIndex": r.step * int(r.job["grad_accum"]),
            "fingerprint": r.job["fingerprint"],
            "losses": r.losses,
            "engine": "torch",
            "torch_rng": torch.get_rng_state().tolist(),
        }
        write_json(os.path.join(tmp, "trainer_state.json"), state)
        write_json(os.path.join(tmp, COMPLETE_MARKER), {"step": r.step})
        # No signal handler between the two renames (they would leave no checkpoint/ at all).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if os.path.exists(final):
                os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                if os.path.exists(old) and not os.path.exists(final):
                    os.replace(old, final)
                raise
            # Still masked: a SIGINT held back during the renames is delivered the moment the mask is
            # restored, and must not find the previous checkpoint left aside as checkpoint.old-PID.
            shutil.rmtree(old, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(r):
    d = os.path.join(r.job["output_dir"], CHECKPOINT_DIR)
    where = os.path.join(d, "trainer_state.json")
    try:
        with open(where) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise r.Err("CHECKPOINT_INVALID", f"cannot read trainer state ({e})", where)
    if state.get("engine") != "torch":
        raise r.Err("CHECKPOINT_INVALID", "checkpoint was written by the embedded engine; resume it with --engine embedded or use a new output_dir", d)
    if state.get("fingerprint") != r.job["fingerprint"]:
        raise r.Err("CHECKPOINT_INVALID", "checkpoint belongs to a run with different data, model or hyper-parameters; use a new output_dir or drop --resume", d)
    try:
        t, meta = st.read_file(os.path.join(d, "state.safetensors"))
    except (st.SafetensorsError, OSError, ValueError) as e:
        raise r.Err("CHECKPOINT_INVALID", str(e), d)
    with torch.no_grad():
        for n, p in r.trainable:
            for prefix, target in (("param", p), ("adam_m", r.opt.m[n]), ("adam_v", r.opt.v[n])):
                x = t.get(f"{prefix}/{n}")
                if x is None or list(x.shape) != list(target.shape):
                    raise r.Err("CHECKPOINT_INVALID", f"missing or mis-shaped {prefix}/{n}", d)
                target.copy_(x.to(target.dtype))
    r.opt.step_count = int(meta.get("adam_step", state["step"]))
    r.step = int(state["step"])
    r.losses = list(state.get("losses", []))
    if state.get("torch_rng") is not None:
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
