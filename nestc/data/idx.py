"""IDX files, the format of MNIST, Fashion-MNIST and KMNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values. Everything is checked against the header before
use, so a truncated download or a wrong file fails here naming the file instead of producing
garbage images later.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from nestc.data.dataset import Split
from nestc.errors import DataError

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The four files of an MNIST-style data set, by split: (images, labels).
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx(folder: Path, name: str) -> Path | None:
    """``folder/name`` or, failing that, ``folder/name.gz`` (torchvision keeps both forms); then the same with a
    dot before ``idx`` (``train-images.idx3-ubyte``), as the copies of MNIST shared on Kaggle spell them."""
    dotted = name.replace("-idx", ".idx")
    for spelling in dict.fromkeys((name, dotted)):
        for candidate in (folder / spelling, folder / f"{spelling}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file with ``ndim`` dimensions; a bad magic, size or gzip stream is a DataError."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'missing'})")
    if raw[3] != ndim:
        raise DataError(f"{path}: IDX file has {raw[3]} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _TYPES[raw[2]]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise DataError(f"{path}: {state}: header {dims} needs {expected} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_pair(images: Path, labels: Path) -> Split:
    """One split from an images file (N, H, W) and a labels file (N,) that must agree on N."""
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if len(x) != len(y):
        raise DataError(f"{labels}: holds {len(y)} labels but {images} holds {len(x)} images")
    return Split(x, y, str(images), str(labels))


def read_mnist_folder(folder: Path) -> tuple[Split, Split]:
    """The training and test splits of an MNIST-style folder (see :data:`MNIST_FILES`)."""
    splits = []
    for images, labels in MNIST_FILES.values():
        image_file, label_file = find_idx(folder, images), find_idx(folder, labels)
        if image_file is None or label_file is None:
            raise DataError(f"{folder}: missing {images}[.gz] or {labels}[.gz]")
        splits.append(read_idx_pair(image_file, label_file))
    return splits[0], splits[1]


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({' '.join(str(exc).split())})") from exc
