"""PyTorch reference for bench/train.ts: the same Llama model, batch and
AdamW step, on the CPU with 2 threads.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/train_ref.py '{"vocab":..,"d":..,...}'
prints JSON {"s_per_step", "tokens_per_s", "peak_rss_mb", "losses"}
"""
import json
import math
import resource
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LoraLinear(torch.nn.Module):
    """Frozen base linear + PEFT-style LoRA: y = base(x) + (x @ A^T @ B^T) * alpha / r."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.A = torch.nn.Parameter(torch.empty(r, base.in_features).uniform_(-1 / math.sqrt(base.in_features), 1 / math.sqrt(base.in_features)))
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


def linear(c, name, i, o, bias=False):
    lin = torch.nn.Linear(i, o, bias=bias)
    lora = c.get("lora")
    if lora and name in lora["targets"]:
        return LoraLinear(lin, lora["r"], lora["alpha"])
    return lin


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H, KV, hd, I = c["d"], c["heads"], c["kv_heads"], c["d"] // c["heads"], c["inter"]
        self.H, self.KV, self.hd = H, KV, hd
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        b = bool(c.get("bias"))
        self.q = linear(c, "q_proj", d, H * hd, b)
        self.k = linear(c, "k_proj", d, KV * hd, b)
        self.v = linear(c, "v_proj", d, KV * hd, b)
        self.o = linear(c, "o_proj", H * hd, d)
        self.g = linear(c, "gate_proj", d, I)
        self.u = linear(c, "up_proj", d, I)
        self.dn = linear(c, "down_proj", I, d)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.KV
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        # torch 1.13 has scaled_dot_product_attention only from 2.0: explicit causal softmax.
        s = q @ k.transpose(2, 3) / math.sqrt(self.hd)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        a = torch.softmax(s, -1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(B, T, -1))
        h = self.n2(x)
        return x + self.dn(torch.nn.functional.silu(self.g(h)) * self.u(h))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.emb = torch.nn.Embedding(c["vocab"], c["d"])
        self.layers = torch.nn.ModuleList([Layer(c) for _ in range(c["layers"])])
        self.norm = RMSNorm(c["d"])
        self.head = torch.nn.Linear(c["d"], c["vocab"], bias=False)
        if c.get("tied"):
            self.head.weight = self.emb.weight
        if c.get("lora"):
            # LoRA: only the adapters train (embeddings, norms and head frozen, as chatsft's LoRA).
            for n, p in self.named_parameters():
                if not (n.endswith(".A") or n.endswith(".B")):
                    p.requires_grad_(False)
        hd = c["d"] // c["heads"]
        inv = 1.0 / (c.get("rope_theta", 10000) ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.arange(c["seq"]).float()[:, None] * inv[None]
        e = torch.cat((f, f), -1)
        self.cos, self.sin = e.cos(), e.sin()

    def forward(self, ids):
        x = self.emb(ids)
        for l in self.layers:
            x = l(x, self.cos, self.sin)
        return self.head(self.norm(x))


def main():
    c = json.loads(sys.argv[1])
    m = Model(c)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, c["vocab"], (c["batch"], c["seq"]), generator=g)
    losses, times = [], []
    for step in range(c["warmup"] + c["steps"]):
        t = time.perf_counter()
        logits = m(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, c["vocab"]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], 1.0)
        opt.step()
        losses.append(loss.item())
        if step >= c["warmup"]:
            times.append(time.perf_counter() - t)
    s = sum(times) / len(times)
    print(json.dumps({"s_per_step": s, "tokens_per_s": c["batch"] * c["seq"] / s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "losses": losses}))


if __name__ == "__main__":
    main()
