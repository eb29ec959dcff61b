"""The torch worker's decoder (python/chatsft_worker/model.py, float32) against
the float64 reference (llama_ref.py) on random HF checkpoints of every layout
the worker supports: GQA, llama3 rope_scaling, Qwen2 q/k/v bias, Llama
attention_bias (o_proj bias too), Qwen3 q/k norm with head_dim ≠ d/H and a tied
head; one padded and one packed batch each.

usage: PYTHONPATH=python /usr/bin/python3 test/reference/worker_check.py
prints JSON [{"name", "max_logit_diff", "loss_rel_diff"}]
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import llama_ref  # noqa: E402

from chatsft_worker.model import Config, build, expected_shapes  # noqa: E402

BASE = {"vocab_size": 61, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "rms_norm_eps": 1e-6}
CONFIGS = [
    ("llama GQA untied", {**BASE, "model_type": "llama", "num_key_value_heads": 2, "rope_theta": 500000.0}),
    ("llama3 rope_scaling", {**BASE, "model_type": "llama", "num_key_value_heads": 1, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    ("qwen2 qkv bias", {**BASE, "model_type": "qwen2", "num_key_value_heads": 2}),
    ("llama attention_bias", {**BASE, "model_type": "llama", "attention_bias": True}),
    ("mistral", {**BASE, "model_type": "mistral", "num_key_value_heads": 2}),
    ("qwen3 qk norm tied head_dim", {**BASE, "model_type": "qwen3", "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True}),
]


def batches(V, g):
    # Padded (right and left) and packed rows, segment ids as src/batch/collate.ts makes them.
    ids = torch.randint(0, V, (2, 12), generator=g)
    padded = {"ids": ids.clone(), "pos": torch.zeros(2, 12, dtype=torch.long), "seg": torch.zeros(2, 12, dtype=torch.long)}
    padded["pos"][0, :9] = torch.arange(9)
    padded["seg"][0, :9] = 1
    padded["pos"][1, 4:] = torch.arange(8)
    padded["seg"][1, 4:] = 1
    packed = {"ids": ids[:1].clone(), "pos": torch.tensor([list(range(5)) + list(range(7))]), "seg": torch.tensor([[1] * 5 + [2] * 7])}
    out = []
    for b in (padded, packed):
        labels = torch.where(b["seg"] != 0, b["ids"], torch.full_like(b["ids"], -100))
        starts = torch.cat([torch.ones_like(b["seg"][:, :1], dtype=torch.bool), b["seg"][:, 1:] != b["seg"][:, :-1]], 1)
        labels[starts] = -100  # first token of each segment is no target
        b["labels"] = labels
        out.append(b)
    return out


def main():
    g = torch.Generator().manual_seed(0)
    results = []
    for name, raw in CONFIGS:
        c = Config(raw)
        W = {}
        for n, shape in expected_shapes(c).items():
            if n.endswith("norm.weight"):
                W[n] = 1 + 0.1 * torch.randn(shape, generator=g)
            elif n.endswith(".bias"):
                W[n] = 0.1 * torch.randn(shape, generator=g)
            else:
                W[n] = 0.2 * torch.randn(shape, generator=g)
        model, problems = build(raw, {k: v.clone() for k, v in W.items()}, c.vocab_size, torch.device("cpu"), torch.float32)
        assert not problems, problems
        W64 = {k: v.to(torch.float64) for k, v in W.items()}
        worst_logit, worst_loss = 0.0, 0.0
        for b in batches(c.vocab_size, g):
            with torch.no_grad():
                h = model.hidden(b["ids"], b["pos"], b["seg"])
                logits = model.logits_of(h.reshape(-1, h.shape[-1])).reshape(h.shape[0], h.shape[1], -1)
            ref = llama_ref.forward(raw, W64, b["ids"], b["pos"], b["seg"])
            real = (b["seg"] != 0)[..., None]
            worst_logit = max(worst_logit, float(((logits.double() - ref).abs() * real).max()))
            lb = b["labels"][:, 1:].reshape(-1)
            ours = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, c.vocab_size).double(), lb, ignore_index=-100, reduction="sum")
            theirs = torch.nn.functional.cross_entropy(ref[:, :-1].reshape(-1, c.vocab_size), lb, ignore_index=-100, reduction="sum")
            worst_loss = max(worst_loss, float(abs(ours - theirs) / abs(theirs)))
        results.append({"name": name, "max_logit_diff": worst_logit, "loss_rel_diff": worst_loss})
    print(json.dumps(results))


main()
