"""The embedded default: a stratified subset of real Fashion-MNIST shipped inside the package.

It lets the first command of the README run with neither network nor GPU. The file is made by
:func:`build_embedded_subset` from the official IDX files, so it can be rebuilt bit for bit::

    python -c "from nestc.data.embedded import build_embedded_subset as b; \
b('/usr/share/datasets/fashion-mnist', 'nestc/data/embedded/fashion_mnist_subset.npz')"

Fashion-MNIST is (c) 2017 Zalando SE under the MIT licence; see ``embedded/LICENSE-fashion-mnist.txt``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from nestc.data.idx import MNIST_FILES, find_idx, read_idx_pair
from nestc.data.subset import stratified_indices
from nestc.errors import DataError

#: The shipped file, inside the installed package.
EMBEDDED_FILE = resources.files("nestc.data").joinpath("embedded", "fashion_mnist_subset.npz")

#: Fashion-MNIST's classes, in label order.
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def embedded_path() -> Path:
    """A filesystem path to the shipped subset (the package is installed as files, not zipped)."""
    return Path(str(EMBEDDED_FILE))


def build_embedded_subset(
    source_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
) -> Path:
    """Write a class-stratified subset of the Fashion-MNIST IDX files in ``source_dir``.

    Stores uint8 ``x_train`` (n_train, 28, 28), ``y_train``, ``x_test`` (n_test, 28, 28) and
    ``y_test`` with ``np.savez_compressed``; with 10 classes and the defaults, exactly 200 training
    and 50 test images per class. Same inputs and ``seed``, same file content.
    """
    source = Path(source_dir)
    arrays = {}
    for split, (images, labels), n in (("train", MNIST_FILES["train"], n_train), ("test", MNIST_FILES["test"], n_test)):
        image_file, label_file = find_idx(source, images), find_idx(source, labels)
        if image_file is None or label_file is None:
            raise DataError(f"{source}: needs {images}[.gz] and {labels}[.gz]")
        data = read_idx_pair(image_file, label_file)
        assert data.y is not None, "read_idx_pair always reads labels"
        keep = stratified_indices(data.y, n, seed=seed)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = data.x[keep], data.y[keep].astype(np.uint8)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out
