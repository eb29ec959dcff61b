"""Greedy generation for the stop rate measured during training (SPEC §8).

The worker only returns token ids; the TypeScript side turns them into
stop_rate / mean_new_tokens / runaway counts with the same function as
`chatsft eval`. No KV cache: each new token re-runs the (left-padded) batch,
which is simple and cheap at eval sizes; prompts run in chunks of 16.
"""
import torch


@torch.no_grad()
def greedy(model, prompts, stop_ids, max_new_tokens, pad_id, device, autocast, chunk=16):
    stop = set(stop_ids)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(prompts), chunk):
        seqs = [list(p) for p in prompts[start : start + chunk]]
        gen = [[] for _ in seqs]
        stopped = [None] * len(seqs)
        for _ in range(max_new_tokens):
            active = [j for j in range(len(seqs)) if stopped[j] is None]
            if not active:
                break
            rows = [seqs[j] for j in active]
            T = max(len(r) for r in rows)
            # Left padding: the last column is every row's newest token. Padding is segment 0.
            ids = [[pad_id] * (T - len(r)) + r for r in rows]
            pos = [[0] * (T - len(r)) + list(range(len(r))) for r in rows]
            seg = [[0] * (T - len(r)) + [1] * len(r) for r in rows]
            L = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
            with autocast():
                h = model.hidden(L(ids), L(pos), L(seg))[:, -1]
                nxt = model.logits_of(h).argmax(-1).tolist()
            for j, t in zip(active, nxt):
                if t in stop:
                    stopped[j] = t
                else:
                    gen[j].append(t)
                    seqs[j].append(t)
        for j in range(len(seqs)):
            out.append({"tokens": gen[j], "stopped_by": stopped[j], "hit_max": stopped[j] is None and len(gen[j]) >= max_new_tokens})
    if was_training:
        model.train()
    return out
