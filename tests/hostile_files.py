"""Helpers of the hostile-input tests: valid files of every format sqdist reads, and ways to break them."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def state_of(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return json.loads(arrays["state_json"].tobytes().decode("utf-8"))


def with_state(arrays: dict[str, np.ndarray], state: Any, raw: bytes | None = None) -> dict[str, np.ndarray]:
    out = dict(arrays)
    text = raw if raw is not None else json.dumps(state).encode("utf-8")
    out["state_json"] = np.frombuffer(text, dtype=np.uint8)
    return out


def write(path: Path, data: bytes | dict[str, Any]) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else npz_bytes(data))
    return path


def central_directory_offset(data: bytes) -> int:
    """Offset of the first central-directory entry of a zip archive (from its end record)."""
    end = data.rfind(b"PK\x05\x06")
    return struct.unpack("<I", data[end + 16 : end + 20])[0]


def flip_member_byte(data: bytes, member: str, back: int = 1) -> bytes:
    """The archive with one byte of ``member``'s data flipped (``back`` bytes before its end)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    pos = info.header_offset + 30 + name_len + extra_len + info.compress_size - back
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


def corrupt_compression_method(data: bytes, method: int = 99) -> bytes:
    """The archive with its first central-directory entry claiming compression ``method``."""
    cd = central_directory_offset(data)
    assert data[cd : cd + 4] == b"PK\x01\x02"
    return data[: cd + 10] + struct.pack("<H", method) + data[cd + 12 :]


def set_encrypted_flag(data: bytes) -> bytes:
    cd = central_directory_offset(data)
    flags = struct.unpack("<H", data[cd + 8 : cd + 10])[0] | 0x1
    return data[: cd + 8] + struct.pack("<H", flags) + data[cd + 10 :]


def npz_with_member(arrays: dict[str, np.ndarray], name: str, payload: bytes, *,
                    compression: int = zipfile.ZIP_STORED) -> bytes:
    """A valid archive of ``arrays`` plus one extra member ``name`` holding ``payload``."""
    buf = io.BytesIO(npz_bytes(arrays))
    with zipfile.ZipFile(buf, "a", compression=compression) as zf:
        zf.writestr(name, payload)
    return buf.getvalue()


def lying_npy(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"") -> bytes:
    """A .npy file whose header declares ``shape`` but holds ``data``."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


class Boom:
    """Unpickling this runs code: it creates the file named by ``marker`` (the test checks it never appears)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_npy(marker: str) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Boom(marker)], dtype=object), allow_pickle=True)
    return buf.getvalue()
