"""Trainer checkpoints in the format of ``trainers/checkpoint.ts`` (either side reads the other's).

A checkpoint holds the trainer's state and the input offsets it covers, in one file replaced
atomically (temp file + fsync + rename + fsync of the directory): whatever the file says is
what the trainer had trained when it was written, and its offsets win over the group's.

Layout (little-endian): ``FLYWCKP1``, u32 header length, UTF-8 JSON header, padding to 8,
the arrays' raw bytes (each 8-byte aligned), sha256 of everything before it (32 bytes).

    write_checkpoint(path, Checkpoint(group="g", offsets=[...], state={"step": 3},
                                      arrays={"w": np.zeros(4, np.float32)}))
    cp = read_checkpoint(path)   # None when there is none yet
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

MAGIC = b"FLYWCKP1"
_DTYPES = {"float64": np.float64, "float32": np.float32, "int32": np.int32, "uint8": np.uint8}


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class TopicPartitionOffset:
    topic: str
    partition: int
    #: The next offset to read: everything before it is covered.
    offset: int

    def to_json(self) -> dict:
        return {"topic": self.topic, "partition": self.partition, "offset": str(self.offset)}


@dataclass
class Checkpoint:
    group: str
    offsets: list[TopicPartitionOffset]
    state: Any = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: The client's admission state (the replay buffer), restored with the offsets.
    admission: Any = None
    saved_at: int = 0

    def offset_map(self) -> dict[tuple[str, int], int]:
        return {(o.topic, o.partition): o.offset for o in self.offsets}


def encode_checkpoint(cp: Checkpoint) -> bytes:
    entries = []
    blobs = []
    cursor = 0
    for name, array in cp.arrays.items():
        a = np.ascontiguousarray(array)
        dtype = a.dtype.name
        if dtype not in _DTYPES:
            raise TypeError(f"checkpoint array {name}: dtype {dtype} is not one of {', '.join(_DTYPES)}")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False).reshape(-1)
        entries.append({"name": name, "dtype": dtype, "byteOffset": cursor, "length": int(a.size)})
        blobs.append((cursor, a.tobytes()))
        cursor = _align8(cursor + a.nbytes)
    header = {
        "format": 1,
        "group": cp.group,
        "savedAt": cp.saved_at or int(time.time() * 1000),
        "offsets": [o.to_json() for o in cp.offsets],
        "state": cp.state,
        "admission": cp.admission,
        "arrays": entries,
    }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    data_start = _align8(len(MAGIC) + 4 + len(text))
    out = bytearray(data_start + cursor + 32)
    out[0:8] = MAGIC
    struct.pack_into("<I", out, 8, len(text))
    out[12 : 12 + len(text)] = text
    for at, blob in blobs:
        out[data_start + at : data_start + at + len(blob)] = blob
    out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def decode_checkpoint(data: bytes) -> Checkpoint:
    if len(data) < len(MAGIC) + 4 + 32 or data[:8] != MAGIC:
        raise ValueError("not a Flywheel trainer checkpoint (bad magic)")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ValueError("checkpoint is corrupted (sha256 mismatch)")
    (length,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12 : 12 + length].decode("utf-8"))
    if header.get("format") != 1:
        raise ValueError(f"unknown checkpoint format {header.get('format')}")
    start = _align8(12 + length)
    arrays = {}
    for e in header["arrays"]:
        dtype = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
        at = start + e["byteOffset"]
        arrays[e["name"]] = np.frombuffer(data, dtype=dtype, count=e["length"], offset=at).copy()
    return Checkpoint(
        group=header["group"],
        offsets=[TopicPartitionOffset(o["topic"], int(o["partition"]), int(o["offset"])) for o in header["offsets"]],
        state=header.get("state"),
        arrays=arrays,
        admission=header.get("admission"),
        saved_at=header.get("savedAt", 0),
    )


def write_file_atomic(path: str, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over ``path``, fsync of the directory:
    a crash anywhere leaves the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def write_checkpoint(path: str, cp: Checkpoint) -> None:
    write_file_atomic(path, encode_checkpoint(cp))


def read_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none yet; a corrupted file raises."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return decode_checkpoint(data)


def arrays_of(state_dict: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """A torch ``state_dict`` (or any name → array mapping) as flat checkpoint arrays plus shapes."""
    arrays, shapes = {}, {}
    for name, value in state_dict.items():
        a = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if a.dtype == np.float16 or a.dtype.name == "bfloat16":
            a = a.astype(np.float32)
        if a.dtype == np.int64:
            a = a.astype(np.float64)  # exact for counters below 2^53 (e.g. BatchNorm's num_batches_tracked)
        shapes[name] = list(a.shape)
        arrays[name] = a.reshape(-1)
    return arrays, shapes


def state_dict_from(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    """The inverse of ``arrays_of`` as torch tensors (``model.load_state_dict(...)``)."""
    import torch

    return {name: torch.from_numpy(np.asarray(arrays[name]).reshape(shape).copy()) for name, shape in shapes.items()}
