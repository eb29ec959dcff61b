"""Rows, the step plan and collation, written by src/torch/job.ts.

rows file (int32 little-endian), per row: n, k, input_ids[n], labels[n], seq_lengths[k]
  (k = 0 for an unpacked row).
plan file (int32), per optimiser step, per micro-batch: c, then c row indices: the
  rows of one global micro-batch in the order of src/train/data.ts DataOrder.
"""
import array

import torch

IGNORE_INDEX = -100


def _ints(path):
    a = array.array("i")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def read_rows(path):
    a = _ints(path)
    rows, i = [], 0
    while i < len(a):
        n, k = a[i], a[i + 1]
        i += 2
        ids = a[i : i + n].tolist()
        labels = a[i + n : i + 2 * n].tolist()
        segs = a[i + 2 * n : i + 2 * n + k].tolist() if k else [n]
        i += 2 * n + k
        rows.append((ids, labels, segs))
    return rows


def read_plan(path, total_steps, grad_accum):
    a = _ints(path)
    plan, i = [], 0
    for _ in range(total_steps):
        step = []
        for _ in range(grad_accum):
            c = a[i]
            step.append(a[i + 1 : i + 1 + c].tolist())
            i += 1 + c
        plan.append(step)
    return plan


def collate(rows, pad_id, side, device):
    """As src/batch/collate.ts: pad to the longest row; labels -100 on padding and on the
    first token of each segment; positions restart per segment; segment ids 1..k, padding 0.
    Returns ids, pos, seg [B, T] and the supervised (rows [M], targets [M]) under HF shifting."""
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    ids = [[pad_id] * T for _ in range(B)]
    labels = [[IGNORE_INDEX] * T for _ in range(B)]
    pos = [[0] * T for _ in range(B)]
    seg = [[0] * T for _ in range(B)]
    for b, (rid, rlab, segs) in enumerate(rows):
        off = T - len(rid) if side == "left" else 0
        i = 0
        for s, length in enumerate(segs):
            for p in range(length):
                at = off + i
                ids[b][at] = rid[i]
                labels[b][at] = IGNORE_INDEX if p == 0 else rlab[i]
                pos[b][at] = p
                seg[b][at] = s + 1
                i += 1
    # Position b·T + t is scored against labels[b][t+1] when supervised and in the same segment.
    sup_rows, targets = [], []
    for b in range(B):
        for t in range(T - 1):
            y = labels[b][t + 1]
            if y == IGNORE_INDEX:
                continue
            s = seg[b][t + 1]
            if s == 0 or seg[b][t] != s:
                continue
            sup_rows.append(b * T + t)
            targets.append(y)
    L = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {"ids": L(ids), "pos": L(pos), "seg": L(seg), "rows": L(sup_rows), "targets": L(targets), "real": sum(len(r[0]) for r in rows)}
