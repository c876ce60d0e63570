#!/usr/bin/env python3
"""Convert a legacy (pre-1.6, non-zip) PyTorch checkpoint to safetensors.

Standard library only, so it runs without PyTorch or numpy. The legacy format is a
run of pickles (magic number, protocol version, system info, the object graph,
the list of storage keys) followed by each storage's raw bytes, prefixed by its
element count. Tensors are views into storages with an offset and strides; many
are stored non-contiguous, so every tensor is gathered element by element in
row-major order before it is written.

Usage: convert_legacy_pth.py IN.pth OUT.safetensors [--skip-suffix num_batches_tracked]
"""
import argparse
import collections
import json
import pickle
import struct
import sys

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class -> (safetensors dtype, struct code, bytes per element)
STORAGE_TYPES = {
    "FloatStorage": ("F32", "f", 4),
    "DoubleStorage": ("F64", "d", 8),
    "HalfStorage": ("F16", "e", 2),
    "LongStorage": ("I64", "q", 8),
    "IntStorage": ("I32", "i", 4),
    "ByteStorage": ("U8", "B", 1),
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_TYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype, self.code, self.size = STORAGE_TYPES[name]


class StorageRef:
    """A storage named in the pickle; its bytes arrive after the object graph."""

    def __init__(self, key, storage_type, numel):
        self.key = key
        self.type = storage_type
        self.numel = numel
        self.data = None


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)


def rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return TensorRef(storage, storage_offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = StorageRef(key, storage_type, numel)
        return self.storages[key]


def load_legacy(path):
    with open(path, "rb") as f:
        if f.read(2)[:1] == b"PK":
            raise SystemExit("this is a zip checkpoint (torch >= 1.6); load it with candle directly")
        f.seek(0)
        if pickle.load(f) != LEGACY_MAGIC:
            raise SystemExit("not a legacy PyTorch checkpoint (bad magic number)")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise SystemExit(f"unsupported protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise SystemExit("big-endian checkpoints are not supported")
        storages = {}
        obj = LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            ref = storages[key]
            data = f.read(numel * ref.type.size)
            if len(data) != numel * ref.type.size:
                raise SystemExit(f"storage {key} is truncated")
            ref.data = data
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return obj


def contiguous_bytes(t):
    """Row-major bytes of a strided view, gathered element by element."""
    esize = t.storage.type.size
    src = memoryview(t.storage.data)
    n = 1
    for d in t.size:
        n *= d
    out = bytearray(n * esize)
    if n == 0:
        return bytes(out)
    # Fast path: already contiguous.
    expect, contiguous = 1, True
    for d, s in zip(reversed(t.size), reversed(t.stride)):
        if d != 1 and s != expect:
            contiguous = False
        expect *= d
    if contiguous:
        start = t.offset * esize
        return bytes(src[start : start + n * esize])
    index = [0] * len(t.size)
    for i in range(n):
        pos = t.offset + sum(ix * st for ix, st in zip(index, t.stride))
        out[i * esize : (i + 1) * esize] = src[pos * esize : (pos + 1) * esize]
        for d in range(len(index) - 1, -1, -1):
            index[d] += 1
            if index[d] < t.size[d]:
                break
            index[d] = 0
    return bytes(out)


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        data = contiguous_bytes(t)
        header[name] = {
            "dtype": t.storage.type.dtype,
            "shape": list(t.size),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--skip-suffix", action="append", default=["num_batches_tracked"],
                    help="drop tensors whose name ends with this (repeatable)")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="string metadata stored in the safetensors header (repeatable)")
    args = ap.parse_args()
    state = load_legacy(args.input)
    tensors, strided = {}, 0
    for name, value in state.items():
        if not isinstance(value, TensorRef):
            continue
        if any(name.endswith(s) for s in args.skip_suffix):
            continue
        tensors[name] = value
        n, expect = 1, 1
        for d, s in zip(reversed(value.size), reversed(value.stride)):
            if d != 1 and s != expect:
                strided += 1
                break
            expect *= d
    metadata = dict(kv.split("=", 1) for kv in args.meta)
    write_safetensors(args.output, tensors, metadata)
    print(f"wrote {len(tensors)} tensors ({strided} stored non-contiguous) to {args.output}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
