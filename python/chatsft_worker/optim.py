"""AdamW, clipping: the update order and arithmetic of src/engine/optim.ts."""
import math

import torch


def decays(name, p):
    """No decay on norms, biases and other 1-D parameters (as HF Trainer does)."""
    return p.dim() >= 2 and not name.endswith(".bias") and "norm" not in name


class AdamW:
    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.params = params  # [(name, Parameter)]
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.step_count = 0
        self.m = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        self.v = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}

    @torch.no_grad()
    def step(self, lr):
        """p ← p·(1 − lr·wd); p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)."""
        self.step_count += 1
        b1, b2 = self.beta1, self.beta2
        bc1 = 1 - math.pow(b1, self.step_count)
        bc2 = 1 - math.pow(b2, self.step_count)
        for name, p in self.params:
            g = p.grad.float() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
            m, v = self.m[name], self.v[name]
            m.mul_(b1).add_(g * (1 - b1))
            v.mul_(b2).add_(g.square() * (1 - b2))
            if self.weight_decay > 0 and decays(name, p):
                p.mul_(1 - lr * self.weight_decay)
            denom = v.sqrt() / math.sqrt(bc2) + self.eps
            p.sub_((m / denom * (lr / bc1)).to(p.dtype))


@torch.no_grad()
def clip_(params, max_norm):
    """Scale gradients so their global L2 norm is at most max_norm; returns the norm before."""
    sq = 0.0
    for _, p in params:
        if p.grad is not None:
            sq += float(p.grad.float().square().sum())
    norm = math.sqrt(sq)
    if max_norm > 0 and norm > max_norm:
        s = max_norm / (norm + 1e-6)
        for _, p in params:
            if p.grad is not None:
                p.grad.mul_(s)
    return norm
