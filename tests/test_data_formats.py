"""Writers for the official data file formats, shared by the test_data_* modules, and their checks.

The writers produce files byte-compatible with the official releases (IDX, CIFAR binary, CIFAR
python batches as Python 2 pickled them), so the loaders are tested on the real formats without
the real (large, unreachable) downloads. The tests here compare the writers with real files.
"""

from __future__ import annotations

import gzip
import io
import pickle
import pickletools
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from nestc.data import locate

FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make data lookup see only folders under ``tmp_path`` (also the working directory); returns the (empty)
    user cache."""
    monkeypatch.delenv("NESTC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(locate, "SYSTEM_ROOTS", ())
    monkeypatch.chdir(tmp_path)  # ./data is searched too
    return tmp_path / "xdg" / "nestc"


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, data."""
    assert arr.dtype == np.uint8
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 0) -> dict:
    """The four MNIST files of random 28x28 images in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for name, arr in zip(MNIST_NAMES[split], (x, y), strict=True):
            data = idx_bytes(arr)
            (folder / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays


def cifar_images(n: int, seed: int) -> np.ndarray:
    """``n`` random CIFAR images as the official files store them: (n, 3072), R then G then B planes."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar(folder: Path, fmt: str, classes: int, per_file: int = 4, py2: bool = True) -> dict:
    """A complete CIFAR-10 (``classes=10``) or CIFAR-100 folder in the official ``fmt``.

    ``fmt`` is "binary" (``.bin`` records) or "python" (pickled dict batches; ``py2`` writes them
    as Python 2 did, else with this Python's ``pickle.dump``). Returns the arrays written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if classes == 10:
        train = [f"data_batch_{i}" for i in range(1, 6)]
        test = ["test_batch"]
    else:
        train, test = ["train"], ["test"]
    arrays: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for i, name in enumerate(train + test):
        split = "train" if name in train else "test"
        x = cifar_images(per_file, seed=i)
        fine = (np.arange(per_file) * 7 + i) % classes
        arrays[f"x_{split}"].append(x)
        arrays[f"y_{split}"].append(fine)
        if fmt == "binary":
            labels = [fine] if classes == 10 else [fine // 5, fine]  # CIFAR-100: coarse, then fine
            records = np.concatenate([np.stack(labels, axis=1).astype(np.uint8), x], axis=1)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
        else:
            batch = {b"batch_label": f"batch {i}".encode(), b"data": x, b"filenames": [b"img.png"] * per_file}
            if classes == 10:
                batch[b"labels"] = fine.tolist()
            else:
                batch[b"fine_labels"], batch[b"coarse_labels"] = fine.tolist(), (fine // 5).tolist()
            (folder / name).write_bytes(py2_pickle(batch) if py2 else pickle.dumps(batch))
    return {k: np.concatenate(v) for k, v in arrays.items()}


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as CPython 2 wrote it: byte and text strings as BINSTRING, not ``_codecs.encode``."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_string(self, obj: bytes | str) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_string
    dispatch[str] = _save_string


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled the way the official CIFAR python batches are (Python 2, numpy 1.x names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def globals_in(data: bytes) -> set[str]:
    """The ``module name`` pairs a protocol-2 pickle loads with GLOBAL."""
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_idx_writer_matches_the_official_header() -> None:
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        official = f.read(8)
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        official_images = f.read(16)
    assert idx_bytes(np.zeros(10000, np.uint8))[:8] == official
    assert idx_bytes(np.zeros((10000, 28, 28), np.uint8))[:16] == official_images


def test_py2_pickle_uses_python2_opcodes_and_numpy1_names() -> None:
    data = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
    assert globals_in(data) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert "_codecs" not in str(globals_in(data))
    assert pickle.loads(data, encoding="latin1")["labels"] == [1, 2]
