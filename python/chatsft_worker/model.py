"""Llama / Mistral / Qwen2 / Qwen3 decoder with Hugging Face tensor names,
numerically aligned with the embedded engine (src/engine/forward.ts):
RMSNorm, RoPE (llama3 scaling), grouped-query attention, q/k/v bias, q/k
norm, SwiGLU, tied or untied head; packed rows attend only within their
segment. LoRA adapters and trained new-token rows live on the modules so
DistributedDataParallel sees them as ordinary parameters.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
NEG = -1e9  # additive mask value; finite so fully-masked (padding) rows stay NaN-free
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Config:
    """The subset of config.json the decoder needs, with src/engine/config.ts's defaults."""

    def __init__(self, raw):
        self.raw = dict(raw)
        self.model_type = raw["model_type"]
        self.vocab_size = raw["vocab_size"]
        self.hidden_size = raw["hidden_size"]
        self.intermediate_size = raw["intermediate_size"]
        self.num_hidden_layers = raw["num_hidden_layers"]
        self.num_attention_heads = raw["num_attention_heads"]
        self.num_key_value_heads = raw.get("num_key_value_heads") or self.num_attention_heads
        self.head_dim = raw.get("head_dim") or self.hidden_size // self.num_attention_heads
        self.rms_norm_eps = raw.get("rms_norm_eps", 1e-6)
        self.rope_theta = raw.get("rope_theta", 10000.0)
        self.rope_scaling = raw.get("rope_scaling")
        self.tie_word_embeddings = bool(raw.get("tie_word_embeddings", False))
        ab = raw.get("attention_bias")
        self.attention_bias = ab if isinstance(ab, bool) else self.model_type == "qwen2"
        self.qk_norm = self.model_type == "qwen3"
        # Llama/Qwen3 `attention_bias` also puts a bias on o_proj; Qwen2 never does.
        self.o_bias = self.attention_bias and self.model_type != "qwen2"


def rope_inv_freq(c):
    """[head_dim/2] inverse frequencies in float64, llama3 scaling applied (as ropeInvFreq)."""
    half = c.head_dim // 2
    inv = [1.0 / math.pow(c.rope_theta, (2 * i) / c.head_dim) for i in range(half)]
    rs = c.rope_scaling
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor = rs.get("factor", 8)
        low, high = rs.get("low_freq_factor", 1), rs.get("high_freq_factor", 4)
        orig = rs.get("original_max_position_embeddings", 8192)
        low_wl, high_wl = orig / low, orig / high
        for i in range(half):
            wl = 2 * math.pi / inv[i]
            if wl > low_wl:
                inv[i] = inv[i] / factor
            elif wl >= high_wl:
                smooth = (orig / wl - low) / (high - low)
                inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i]
    return torch.tensor(inv, dtype=torch.float64)


def rope_tables(c, positions):
    """cos/sin [B, T, 1, head_dim] float32 for integer positions [B, T].

    The angle is position × inv_freq rounded to float32 (as HF computes it);
    cos/sin are taken in float64 then rounded, like the engine's Math.cos."""
    inv = rope_inv_freq(c).to(torch.float32).to(positions.device)
    ang = positions.to(torch.float32)[..., None] * inv  # [B, T, hd/2] float32
    ang = ang.to(torch.float64)
    cos, sin = ang.cos().to(torch.float32), ang.sin().to(torch.float32)
    cos = torch.cat([cos, cos], -1)[:, :, None, :]
    sin = torch.cat([sin, sin], -1)[:, :, None, :]
    return cos, sin


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention_bias(seg):
    """Additive bias [B, 1, T, T] from segment ids [B, T]: i sees j iff j ≤ i in the
    same non-zero segment; padding (segment 0) sees only itself."""
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    same = seg[:, :, None] == seg[:, None, :]
    real = (seg != 0)[:, :, None]
    eye = torch.eye(T, dtype=torch.bool, device=seg.device)[None]
    allowed = (same & causal & real) | (~real & eye)
    zero = torch.zeros((), dtype=torch.float32, device=seg.device)
    return torch.where(allowed, zero, torch.full((), NEG, device=seg.device))[:, None]


class RMSNorm(nn.Module):
    def __init__(self, d, eps, **kw):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, **kw))
        self.eps = eps

    def forward(self, x):
        # Computed in float32 even under bf16 autocast.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class Linear(nn.Linear):
    """nn.Linear with an optional LoRA pair: y = xWᵀ + b + dropout(x) Aᵀ Bᵀ · α/r.
    A is [r, in], B is [out, r] (PEFT's layout)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.lora_A = None
        self.lora_B = None
        self.scaling = 0.0
        self.lora_dropout = 0.0

    def add_lora(self, a, r, alpha, dropout):
        self.lora_A = nn.Parameter(a.to(torch.float32).to(self.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=self.weight.device))
        self.scaling = alpha / r
        self.lora_dropout = dropout

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            xin = F.dropout(x, self.lora_dropout, self.training) if self.lora_dropout > 0 else x
            y = y + F.linear(F.linear(xin, self.lora_A), self.lora_B) * self.scaling
        return y

    def merged_weight(self):
        w = self.weight.detach().float()
        if self.lora_A is not None:
            w = w + (self.lora_B.detach().float() @ self.lora_A.detach().float()) * self.scaling
        return w


class Attention(nn.Module):
    def __init__(self, c, **kw):
        super().__init__()
        d, H, KV, hd = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.H, self.KV, self.hd = H, KV, hd
        self.q_proj = Linear(d, H * hd, bias=c.attention_bias, **kw)
        self.k_proj = Linear(d, KV * hd, bias=c.attention_bias, **kw)
        self.v_proj = Linear(d, KV * hd, bias=c.attention_bias, **kw)
        self.o_proj = Linear(H * hd, d, bias=c.o_bias, **kw)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, c.rms_norm_eps, **kw)
            self.k_norm = RMSNorm(hd, c.rms_norm_eps, **kw)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, bias, cache=None):
        """x [B, T, d]; bias [B, 1, T, S] with S = cached + T keys; `cache` (a dict) gets k/v appended."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd)
        k = self.k_proj(x).view(B, T, self.KV, self.hd)
        v = self.v_proj(x).view(B, T, self.KV, self.hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = (q * cos + rotate_half(q) * sin).to(v.dtype)
        k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]
        rep = self.H // self.KV
        if rep > 1:  # HF repeat_kv: query head h reads kv head h // rep
            k = k[:, :, None].expand(B, self.KV, rep, S, self.hd).reshape(B, self.H, S, self.hd)
            v = v[:, :, None].expand(B, self.KV, rep, S, self.hd).reshape(B, self.H, S, self.hd)
        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None and q.is_cuda:
            o = sdpa(q, k, v, attn_mask=bias.to(q.dtype))
        else:  # torch 1.13 has no SDPA; the CPU path is the one the parity tests check
            s = torch.matmul(q * (1.0 / math.sqrt(self.hd)), k.transpose(-1, -2)) + bias  # [B, H, T, T]
            o = torch.matmul(torch.softmax(s.float(), -1).to(v.dtype), v)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.H * self.hd))


class MLP(nn.Module):
    def __init__(self, c, **kw):
        super().__init__()
        d, i = c.hidden_size, c.intermediate_size
        self.gate_proj = Linear(d, i, bias=False, **kw)
        self.up_proj = Linear(d, i, bias=False, **kw)
        self.down_proj = Linear(i, d, bias=False, **kw)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c, **kw):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)
        self.self_attn = Attention(c, **kw)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)
        self.mlp = MLP(c, **kw)

    def forward(self, x, cos, sin, bias, cache=None):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, bias, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Embedding(nn.Module):
    """Token table [V, d] plus optional trained rows: delta [k, d] added to rows `ids`."""

    def __init__(self, V, d, **kw):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(V, d, **kw))
        self.trainable_rows = None

    def add_rows(self, ids):
        dev = self.weight.device
        self.register_buffer("row_ids", torch.tensor(ids, dtype=torch.long, device=dev), persistent=False)
        slot = torch.full((self.weight.shape[0],), -1, dtype=torch.long, device=dev)
        slot[self.row_ids] = torch.arange(len(ids), device=dev)
        self.register_buffer("row_slot", slot, persistent=False)
        self.trainable_rows = nn.Parameter(torch.zeros(len(ids), self.weight.shape[1], device=dev))

    def forward(self, ids):
        x = F.embedding(ids, self.weight)
        if self.trainable_rows is not None:
            s = self.row_slot[ids]
            add = self.trainable_rows[s.clamp(min=0)] * (s >= 0)[..., None]
            x = x + add.to(x.dtype)
        return x

    def merged(self):
        w = self.weight.detach().float().clone()
        if self.trainable_rows is not None:
            w[self.row_ids] += self.trainable_rows.detach().float()
        return w


class Head(nn.Module):
    """Untied output matrix [V, d] (HF lm_head.weight) plus optional trained rows."""

    def __init__(self, V, d, **kw):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(V, d, **kw))
        self.trainable_rows = None


class Inner(nn.Module):
    def __init__(self, c, **kw):
        super().__init__()
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size, **kw)
        self.layers = nn.ModuleList([Layer(c, **kw) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)


class CausalLM(nn.Module):
    def __init__(self, c, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = c
        self.model = Inner(c, **kw)
        self.lm_head = None if c.tie_word_embeddings else Head(c.vocab_size, c.hidden_size, **kw)
        self.gradient_checkpointing = False

    def hidden(self, ids, pos, seg):
        """Final-norm hidden states [B, T, d]."""
        cos, sin = rope_tables(self.config, pos)
        bias = attention_bias(seg)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # Recompute each layer in the backward: activations kept are one [B, T, d] per layer.
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, cos, sin, bias, use_reentrant=False)
            else:
                x = layer(x, cos, sin, bias)
        return self.model.norm(x)

    def hidden_cached(self, ids, pos, bias, caches):
        """Final-norm hidden states [B, T, d] of new tokens, reading and extending per-layer K/V caches."""
        cos, sin = rope_tables(self.config, pos)
        x = self.model.embed_tokens(ids)
        for layer, cache in zip(self.model.layers, caches):
            x = layer(x, cos, sin, bias, cache)
        return self.model.norm(x)

    def logits_of(self, h):
        """[M, V] float32 logits of hidden rows h [M, d], trained rows included."""
        emb = self.model.embed_tokens
        if self.lm_head is None:
            out = F.linear(h, emb.weight)
            rows = emb
        else:
            out = F.linear(h, self.lm_head.weight)
            rows = self.lm_head
        out = out.float()
        if rows.trainable_rows is not None:
            out = out.index_add(1, emb.row_ids, F.linear(h.float(), rows.trainable_rows).float())  # autocast would make it bf16
        return out

    def forward(self, ids, pos, seg, rows, targets):
        """Summed cross-entropy over supervised positions: rows [M] index the flattened
        [B·T] positions whose next-token targets [M] are supervised."""
        h = self.hidden(ids, pos, seg)
        flat = h.reshape(-1, h.shape[-1])
        if rows.numel() == 0:
            # Nothing supervised: a zero that still reaches every parameter (DDP needs that).
            return self.logits_of(flat[:1]).sum() * 0.0
        return F.cross_entropy(self.logits_of(flat[rows]), targets, reduction="sum")

    def lora_modules(self, targets):
        out = []
        for i, layer in enumerate(self.model.layers):
            for t in LORA_TARGETS:
                if t not in targets:
                    continue
                group = "mlp" if t in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                out.append((f"model.layers.{i}.{group}.{t}", getattr(getattr(layer, group), t)))
        return out


def expected_shapes(c):
    """HF tensor names and shapes, as src/engine/model.ts expectedShapes."""
    m = {}
    d, qd, kvd = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    m["model.embed_tokens.weight"] = [c.vocab_size, d]
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}"
        m[f"{p}.input_layernorm.weight"] = [d]
        m[f"{p}.self_attn.q_proj.weight"] = [qd, d]
        m[f"{p}.self_attn.k_proj.weight"] = [kvd, d]
        m[f"{p}.self_attn.v_proj.weight"] = [kvd, d]
        if c.attention_bias:
            m[f"{p}.self_attn.q_proj.bias"] = [qd]
            m[f"{p}.self_attn.k_proj.bias"] = [kvd]
            m[f"{p}.self_attn.v_proj.bias"] = [kvd]
        if c.qk_norm:
            m[f"{p}.self_attn.q_norm.weight"] = [c.head_dim]
            m[f"{p}.self_attn.k_norm.weight"] = [c.head_dim]
        m[f"{p}.self_attn.o_proj.weight"] = [d, qd]
        if c.o_bias:
            m[f"{p}.self_attn.o_proj.bias"] = [d]
        m[f"{p}.post_attention_layernorm.weight"] = [d]
        m[f"{p}.mlp.gate_proj.weight"] = [c.intermediate_size, d]
        m[f"{p}.mlp.up_proj.weight"] = [c.intermediate_size, d]
        m[f"{p}.mlp.down_proj.weight"] = [d, c.intermediate_size]
    m["model.norm.weight"] = [d]
    if not c.tie_word_embeddings:
        m["lm_head.weight"] = [c.vocab_size, d]
    return m


def resize_rows(t, n):
    """Grow (mean of existing rows, as transformers' mean_resizing) or shrink a [V, d] table."""
    V = t.shape[0]
    if n <= V:
        return t[:n].clone()
    mean = t.float().mean(0, keepdim=True).to(t.dtype)
    return torch.cat([t, mean.expand(n - V, -1)], 0)


def build(raw_config, tensors, vocab_size, device, dtype):
    """A CausalLM with `tensors` (HF names) loaded, vocabulary resized to vocab_size.
    Returns (model, problems)."""
    c0 = Config(raw_config)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in tensors and tensors[name].shape[0] != vocab_size and c0.vocab_size != vocab_size:
            tensors[name] = resize_rows(tensors[name], vocab_size)
    raw = dict(raw_config)
    raw["vocab_size"] = vocab_size
    c = Config(raw)
    problems = []
    exp = expected_shapes(c)
    for name, shape in exp.items():
        t = tensors.get(name)
        if t is None:
            problems.append(f"missing tensor '{name}' {shape}")
        elif list(t.shape) != shape:
            problems.append(f"tensor '{name}' has shape {list(t.shape)}, config needs {shape}")
    if problems:
        return None, problems
    # Built on the meta device, then each loaded tensor becomes the parameter in place:
    # no second copy of the weights on the device (a 7B model is loaded once, not twice).
    model = CausalLM(c, device="meta", dtype=dtype)
    for name in exp:
        mod_name, leaf = name.rsplit(".", 1)
        t = tensors.pop(name).to(device=device, dtype=dtype)
        setattr(model.get_submodule(mod_name), leaf, nn.Parameter(t))
    for name, p in model.named_parameters():
        if p.is_meta:
            return None, [f"parameter '{name}' was not loaded"]
    return model, []
