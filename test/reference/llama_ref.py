"""Reference PyTorch forward + masked cross-entropy for Llama / Mistral /
Qwen2 / Qwen3 checkpoints in Hugging Face layout, written from the HF
modeling code's semantics (rotate_half RoPE, GQA by repeat_kv, SwiGLU,
RMSNorm in f32, q/k norm for qwen3, qkv bias for qwen2 / attention_bias).

usage: /usr/bin/python3 llama_ref.py MODEL_DIR BATCH_JSON [--grads]
BATCH_JSON: {"input_ids": [[...]], "labels": [[...]], "position_ids": [[...]],
             "segment_ids": [[...]]}
prints JSON {"loss_sum": float, "count": int, "logits_sample": [...],
             "grads": {name: flat list}}  (grads of loss_sum, with --grads)
"""
import json
import math
import struct
import sys

import torch

DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=DT[e["dtype"]]).reshape(e["shape"])
        out[name] = t.to(torch.float64)
    return out


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def inv_freq(cfg, hd):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get("rope_scaling")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor, lf, hf = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / lf, old / hf
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lf) / (hf - lf)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(medium, smoothed, inv_l)
    return inv


def forward(cfg, W, ids, pos, seg):
    B, T = ids.shape
    d = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or d // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    qwen3 = cfg["model_type"] == "qwen3"
    x = W["model.embed_tokens.weight"][ids]
    freqs = pos[..., None].float() * inv_freq(cfg, hd)[None, None, :]  # [B, T, hd/2] in f32 like HF
    emb = torch.cat((freqs, freqs), dim=-1).to(torch.float64)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [B, 1, T, hd]
    i = torch.arange(T)
    allowed = (i[None, :, None] >= i[None, None, :]) & (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] != 0)
    allowed = allowed | (torch.eye(T, dtype=torch.bool)[None] & (seg[:, :, None] == 0))
    mask = torch.zeros(B, 1, T, T, dtype=torch.float64).masked_fill(~allowed[:, None], float("-inf"))

    def lin(name, v):
        y = v @ W[name + ".weight"].T
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        return y

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        h = rms_norm(x, W[f"{p}.input_layernorm.weight"], eps)
        q = lin(f"{p}.self_attn.q_proj", h).view(B, T, H, hd)
        k = lin(f"{p}.self_attn.k_proj", h).view(B, T, KV, hd)
        v = lin(f"{p}.self_attn.v_proj", h).view(B, T, KV, hd).transpose(1, 2)
        if qwen3:
            q = rms_norm(q, W[f"{p}.self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[f"{p}.self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = q @ k.transpose(2, 3) / math.sqrt(hd) + mask
        a = torch.softmax(s, dim=-1) @ v  # [B, H, T, hd]
        x = x + lin(f"{p}.self_attn.o_proj", a.transpose(1, 2).reshape(B, T, H * hd))
        h = rms_norm(x, W[f"{p}.post_attention_layernorm.weight"], eps)
        g = lin(f"{p}.mlp.gate_proj", h)
        x = x + lin(f"{p}.mlp.down_proj", torch.nn.functional.silu(g) * lin(f"{p}.mlp.up_proj", h))
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return x @ head.T  # [B, T, V]


def main():
    model_dir, batch_file = sys.argv[1], sys.argv[2]
    cfg = json.load(open(f"{model_dir}/config.json"))
    W = read_safetensors(f"{model_dir}/model.safetensors")
    want_grads = "--grads" in sys.argv
    if want_grads:
        for t in W.values():
            t.requires_grad_(True)
    b = json.load(open(batch_file))
    ids = torch.tensor(b["input_ids"])
    labels = torch.tensor(b["labels"])
    logits = forward(cfg, W, ids, torch.tensor(b["position_ids"]), torch.tensor(b["segment_ids"]))
    # HF causal-LM loss: logits[t] against labels[t + 1], -100 ignored, summed here.
    lf = logits[:, :-1].reshape(-1, logits.shape[-1])
    lb = labels[:, 1:].reshape(-1)
    loss_sum = torch.nn.functional.cross_entropy(lf, lb, ignore_index=-100, reduction="sum")
    out = {"loss_sum": loss_sum.item(), "count": int((lb != -100).sum()), "logits_sample": logits[0, :4, :8].reshape(-1).tolist()}
    if want_grads:
        loss_sum.backward()
        out["grads"] = {k: (t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1).tolist() for k, t in W.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
