"""safetensors read/write in pure Python + torch (no `safetensors` package).

Format: u64 little-endian header length, a JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
then the raw little-endian tensor bytes.
"""
import ctypes
import json
import mmap
import os
import struct

import torch

DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(Exception):
    pass


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8:
            raise SafetensorsError(f"{path}: header length {n} exceeds the file")
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def read_file(path, names=None, dtype=None, device="cpu"):
    """{name: tensor} (optionally only `names`, cast to `dtype`, moved to `device`), metadata.

    The file is memory-mapped and tensors are copied one at a time, so peak
    memory is one tensor beyond what is kept."""
    header, base = read_header(path)
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        try:
            for name, info in header.items():
                if names is not None and name not in names:
                    continue
                dt = DTYPES.get(info["dtype"])
                if dt is None:
                    raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
                begin, end = info["data_offsets"]
                shape = list(info["shape"])
                count = 1
                for d in shape:
                    count *= d
                itemsize = torch.tensor([], dtype=dt).element_size()
                if end - begin != count * itemsize or base + end > size:
                    raise SafetensorsError(f"{path}: tensor {name} has inconsistent offsets")
                if count == 0:
                    t = torch.empty(shape, dtype=dt)
                else:
                    # bytearray copy: torch.frombuffer wants a writable buffer.
                    t = torch.frombuffer(bytearray(mm[base + begin : base + end]), dtype=dt).reshape(shape)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                out[name] = t.to(device)
        finally:
            if mm is not None:
                mm.close()
    return out, meta


def read_dir(folder, dtype=None, device="cpu"):
    """All tensors of a model folder: model.safetensors, or the shards of model.safetensors.index.json."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
        files = ["model.safetensors"]
    else:
        files = sorted(x for x in os.listdir(folder) if x.endswith(".safetensors"))
    if not files:
        raise SafetensorsError(f"{folder}: no *.safetensors weights")
    out = {}
    for name in files:
        tensors, _ = read_file(os.path.join(folder, name), dtype=dtype, device=device)
        out.update(tensors)
    return out


def _bytes_of(t):
    t = t.detach().contiguous().cpu()
    n = t.numel() * t.element_size()
    return ctypes.string_at(t.data_ptr(), n) if n else b""


def write_file(path, tensors, metadata=None):
    """Write {name: tensor} to `path` atomically (temp file + rename)."""
    header = {}
    offset = 0
    order = list(tensors.keys())
    for name in order:
        t = tensors[name]
        if t.dtype not in NAMES:
            raise SafetensorsError(f"cannot write dtype {t.dtype} ({name})")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # align the data to 8 bytes, as the reference writer does
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name in order:
                f.write(_bytes_of(tensors[name]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_model(folder, tensors, max_shard_bytes=5 * 1024**3, metadata=None):
    """model.safetensors, or model-0000k-of-0000n.safetensors + index when larger than one shard."""
    meta = {"format": "pt", **(metadata or {})}
    sizes = {k: v.numel() * v.element_size() for k, v in tensors.items()}
    total = sum(sizes.values())
    if total <= max_shard_bytes:
        write_file(os.path.join(folder, "model.safetensors"), tensors, meta)
        stale = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(stale):
            os.remove(stale)
        return ["model.safetensors"]
    shards, cur, cur_size = [], {}, 0
    for k, v in tensors.items():
        if cur and cur_size + sizes[k] > max_shard_bytes:
            shards.append(cur)
            cur, cur_size = {}, 0
        cur[k] = v
        cur_size += sizes[k]
    if cur:
        shards.append(cur)
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_file(os.path.join(folder, name), shard, meta)
        names.append(name)
        for k in shard:
            weight_map[k] = name
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    tmp = os.path.join(folder, f"model.safetensors.index.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2)
    os.replace(tmp, os.path.join(folder, "model.safetensors.index.json"))
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        os.remove(single)
    return names
