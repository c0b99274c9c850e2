"""A GGUF file's header, read with the standard library: its metadata (key -> value) and its tensors' shapes.

The `gguf` package reads the same, but importing it pulls in numpy, requests and, where they are installed,
mistral_common and OpenCV: about 45 MiB more resident memory in the router, kept for good, to read three
integers per load (docs/performance.md). tests/unit/test_gguf_header.py checks this reader against the package.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little- or big-endian, version 2 or 3).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

MAGIC = b"GGUF"
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
ALIGNMENT = "general.alignment"  # of the tensor data; 32 when absent


class NotGGUF(ValueError):
    pass


@dataclass
class Header:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)  # the keys asked for; arrays as lists
    tensors: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (name, dims), when asked for
    offsets: list[int] = field(default_factory=list)  # each tensor's data offset (from data_start), same order
    data_start: int = 0  # where the tensor data begins in the file (aligned), when tensors were asked for
    file_size: int = 0

    @property
    def parameters(self) -> int:
        return sum(math.prod(dims) for _, dims in self.tensors)

    def tensor_bytes(self) -> dict[str, int]:
        """Each tensor's size in the file, from the offsets (any quantization type): the distance to the next
        tensor's data (alignment padding included, at most `general.alignment` bytes each), the last one's to
        the end of the file."""
        order = sorted(range(len(self.tensors)), key=lambda i: self.offsets[i])
        ends = [self.offsets[j] for j in order[1:]] + [self.file_size - self.data_start]
        return {self.tensors[i][0]: end - self.offsets[i] for i, end in zip(order, ends, strict=True)}


class _Reader:
    def __init__(self, f: BinaryIO, order: str):
        self.f, self.order = f, order

    def unpack(self, fmt: str) -> tuple:
        fmt = self.order + fmt
        data = self.f.read(struct.calcsize(fmt))
        if len(data) < struct.calcsize(fmt):
            raise NotGGUF("the header ends early")
        return struct.unpack(fmt, data)

    def string(self) -> str:
        (size,) = self.unpack("Q")
        return self.f.read(size).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        """The next value of type `kind`; None, skipped over, when not `keep`."""
        if kind == STRING:
            if keep:
                return self.string()
            self.f.seek(self.unpack("Q")[0], 1)
        elif kind == ARRAY:
            item, count = self.unpack("IQ")
            if item in SCALARS and not keep:
                self.f.seek(struct.calcsize(self.order + SCALARS[item]) * count, 1)
            elif item in SCALARS:
                return list(self.unpack(f"{count}{SCALARS[item]}"))
            else:
                values = [self.value(item, keep) for _ in range(count)]
                return values if keep else None
        elif kind in SCALARS:
            (scalar,) = self.unpack(SCALARS[kind])
            return scalar if keep else None
        else:
            raise NotGGUF(f"unknown value type {kind}")
        return None


def read(path: str | Path, want: Callable[[str], bool] = lambda key: True, tensors: bool = False) -> Header:
    """The metadata keys `want` accepts (the others are skipped, not decoded) and, with `tensors`, every
    tensor's name and dimensions. NotGGUF for anything else."""
    with Path(path).open("rb") as f:
        if f.read(4) != MAGIC:
            raise NotGGUF(f"{Path(path).name} is not a GGUF file")
        order = "<"
        (version,) = struct.unpack("<I", f.read(4))
        if version & 0xFFFF == 0:  # written on a big-endian machine
            order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in (2, 3):
            raise NotGGUF(f"{Path(path).name}: GGUF version {version} is not supported")
        reader = _Reader(f, order)
        n_tensors, n_kv = reader.unpack("QQ")
        header = Header(version)
        alignment = 32
        for _ in range(n_kv):
            key = reader.string()
            (kind,) = reader.unpack("I")
            keep = want(key) or key == ALIGNMENT
            value = reader.value(kind, keep)
            if key == ALIGNMENT:
                alignment = value
                keep = want(key)
            if keep:
                header.metadata[key] = value
        for _ in range(n_tensors if tensors else 0):
            name = reader.string()
            (dims,) = reader.unpack("I")
            header.tensors.append((name, reader.unpack(f"{dims}Q")))
            header.offsets.append(reader.unpack("IQ")[1])  # type, offset
        if tensors:
            header.data_start = -(-f.tell() // alignment) * alignment
            header.file_size = f.seek(0, 2)
        return header
