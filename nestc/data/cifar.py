"""CIFAR-10 and CIFAR-100 in both official forms: the binary batches and the python pickles.

Binary records are ``<label bytes><3072 pixel bytes>`` (CIFAR-100: coarse then fine label), which
needs no pickle at all, so it is tried first. The python batches are dicts pickled by Python 2;
they go through :mod:`nestc.data.safe_pickle`, never through plain ``pickle.load``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from nestc.data.dataset import Split
from nestc.data.safe_pickle import load_restricted
from nestc.errors import DataError

IMAGE_BYTES = 3 * 32 * 32

Reader = Callable[[Path], tuple[np.ndarray, np.ndarray]]


def read_binary_batch(path: Path, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one binary batch file."""
    record = label_bytes + IMAGE_BYTES
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records (truncated or wrong file)"
        )
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_index].astype(np.int64)


def read_python_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one python (pickled dict) batch file."""
    batch = load_restricted(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_BYTES})")
    if not isinstance(labels, list | np.ndarray) or not all(isinstance(v, int | np.integer) for v in labels):
        raise DataError(f"{path}: '{label_key}' must be a list of integer labels")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def read_cifar_folder(
    folder: Path, train: tuple[str, ...], test: tuple[str, ...], read: Reader, num_classes: int
) -> tuple[Split, Split]:
    """Concatenate the batch files of each split, checking each file's labels as it is read."""
    splits = []
    for names in (train, test):
        xs, ys = [], []
        for name in names:
            x, y = read(folder / name)
            if not len(y):
                raise DataError(f"{folder / name}: the batch holds no images")
            if y.min() < 0 or y.max() >= num_classes:  # checked per file, so the error names the file at fault
                bad = int(y.min()) if y.min() < 0 else int(y.max())
                raise DataError(f"{folder / name}: label {bad} is out of range for {num_classes} classes")
            xs.append(x)
            ys.append(y)
        splits.append(Split(np.concatenate(xs), np.concatenate(ys), str(folder / names[0])))
    return splits[0], splits[1]


CIFAR10_BIN = (tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",))
CIFAR10_PY = (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",))
CIFAR100_BIN = (("train.bin",), ("test.bin",))
CIFAR100_PY = (("train",), ("test",))

read_cifar10_binary = partial(read_binary_batch, label_bytes=1, label_index=0)
read_cifar100_binary = partial(read_binary_batch, label_bytes=2, label_index=1)
read_cifar10_python = partial(read_python_batch, label_key="labels")
read_cifar100_python = partial(read_python_batch, label_key="fine_labels")
