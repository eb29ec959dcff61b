"""Greedy generation for the stop rate measured during training (SPEC §8).

The worker only returns token ids; the TypeScript side turns them into
stop_rate / mean_new_tokens / runaway counts with the same function as
`chatsft eval`. Prompts run in chunks of 16, left-padded; one prefill, then
one token per step against per-layer K/V caches; finished rows leave the batch.
"""
import torch

from .model import NEG, attention_bias


@torch.no_grad()
def greedy(model, prompts, stop_ids, max_new_tokens, pad_id, device, autocast, chunk=16):
    stop = set(stop_ids)
    was_training = model.training
    model.eval()
    out = []
    L = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    for start in range(0, len(prompts), chunk):
        rows = [list(p) for p in prompts[start : start + chunk]]
        n = len(rows)
        gen = [[] for _ in rows]
        stopped = [None] * n
        T = max(len(r) for r in rows)
        # Prefill, left-padded: padding is segment 0 (sees only itself, seen by nobody).
        ids = L([[pad_id] * (T - len(r)) + r for r in rows])
        pos = L([[0] * (T - len(r)) + list(range(len(r))) for r in rows])
        seg = L([[0] * (T - len(r)) + [1] * len(r) for r in rows])
        valid = seg != 0  # [B, S] keys a new token may attend to
        lengths = L([len(r) for r in rows])
        active = torch.arange(n, device=device)
        caches = [{} for _ in model.model.layers]
        with autocast():
            h = model.hidden_cached(ids, pos, attention_bias(seg), caches)[:, -1]
        for step in range(max_new_tokens):
            with autocast():
                nxt = model.logits_of(h).argmax(-1)
            keep = []
            for i, (row, t) in enumerate(zip(active.tolist(), nxt.tolist())):
                if t in stop:
                    stopped[row] = t
                else:
                    gen[row].append(t)
                    keep.append(i)
            if not keep or step == max_new_tokens - 1:
                break
            k = L(keep)
            active, nxt, lengths, valid = active[k], nxt[k], lengths[k], valid[k]
            for c in caches:
                c["k"], c["v"] = c["k"][k], c["v"][k]
            valid = torch.cat([valid, torch.ones(len(keep), 1, dtype=torch.bool, device=device)], 1)
            bias = torch.where(valid, torch.zeros((), device=device), torch.full((), NEG, device=device))[:, None, None, :]
            with autocast():
                h = model.hidden_cached(nxt[:, None], lengths[:, None], bias, caches)[:, -1]
            lengths = lengths + 1
        for j in range(n):
            out.append({"tokens": gen[j], "stopped_by": stopped[j], "hit_max": stopped[j] is None and len(gen[j]) >= max_new_tokens})
    if was_training:
        model.train()
    return out
