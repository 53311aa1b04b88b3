"""Labelled samples in CSV files, as the copies of MNIST and Fashion-MNIST shared on Kaggle come: one row per
sample, a label column and one column per pixel.

The label column is the one the header names ``label`` (or ``class``, ``target``, ``y``; any case), else the
first; a column that numbers the rows (pandas' unnamed index, ``id``) is dropped. Columns whose values are all
whole numbers in 0..255, as many as a square image has (784: 28x28), are grey images, read as every other uint8
source is; any other columns are features at their own scale. The test split is the file beside it with
``test`` for ``train`` in its name (``fashion-mnist_train.csv`` and ``fashion-mnist_test.csv``) when that file
has the same columns; otherwise (Kaggle's Digit Recognizer has a ``test.csv`` without labels) 20 % of each
class is held out, as for an ``.npz`` without ``x_test``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nestc.data.dataset import Split
from nestc.data.subset import TEST_FRACTION, held_out
from nestc.errors import DataError

LABEL_NAMES = ("label", "class", "target", "y")
"""Header names of the label column, in the order they are looked for."""
ROW_NAMES = ("", "unnamed: 0", "index", "id")
"""Header names of columns that number the rows, which are no feature: pandas' ``to_csv`` writes its index
as a first column without a name."""


def read_csv(path: Path) -> tuple[Split, Split]:
    """The training and test splits of the CSV file ``path`` (see the module docstring)."""
    header, x, y = _read_table(path)
    test_file = test_file_beside(path)
    if test_file is not None:
        test_header, x_test, y_test = _read_table(test_file)
        if test_header == header and x_test.shape[1:] == x.shape[1:]:
            return Split(x, y, str(path)), Split(x_test, y_test, str(test_file))
    test = held_out(y)
    held = f"{path} [{TEST_FRACTION:.0%} of each class held out for testing]"
    return Split(x[~test], y[~test], str(path)), Split(x[test], y[test], held, str(path))


def test_file_beside(path: Path) -> Path | None:
    """The file named as ``path`` with ``test`` for ``train``, when there is one."""
    if "train" not in path.name:
        return None
    candidate = path.with_name(path.name.replace("train", "test"))
    return candidate if candidate.is_file() else None


def _read_table(path: Path) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """The file's header (None when its first row is numbers), samples and int64 labels."""
    try:
        with path.open(encoding="utf-8-sig") as file:
            first = file.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a CSV file ({' '.join(str(exc).split())})") from exc
    fields = [field.strip().strip('"') for field in first.split(",")]
    header = None if all(_is_number(field) for field in fields) else fields
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=0 if header is None else 1, dtype=np.float64, ndmin=2,
                           encoding="utf-8-sig")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a table of numbers ({' '.join(str(exc).split())})") from exc
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise DataError(f"{path}: needs a label column and at least one feature column in at least one row; got "
                        f"{table.shape[0]} row(s) of {table.shape[1]} column(s)")
    names = [name.lower() for name in header] if header is not None else []
    row_numbers = [k for k, name in enumerate(names) if name in ROW_NAMES]
    column = next((names.index(name) for name in LABEL_NAMES if name in names),
                  next(k for k in range(table.shape[1]) if k not in row_numbers))
    labels = table[:, column]
    if not np.all(labels == np.round(labels)) or labels.min() < 0:
        where = f"column '{header[column]}'" if header is not None else "the first column"
        raise DataError(f"{path}: the labels ({where}) must be class indices 0, 1, 2 ...")
    features = np.delete(table, [column, *row_numbers], axis=1)
    if not features.shape[1]:
        raise DataError(f"{path}: has no feature column beside the labels and row numbers")
    return header, _samples(features), labels.astype(np.int64)


def _samples(values: np.ndarray) -> np.ndarray:
    """Grey images ``(N, side, side)`` in uint8 where the columns are the pixels of square images, else float32
    features ``(N, F)``."""
    side = math.isqrt(values.shape[1])
    pixels = (side * side == values.shape[1] and side > 1 and values.min() >= 0 and values.max() <= 255
              and np.all(values == np.round(values)))
    if pixels:
        return values.astype(np.uint8).reshape(len(values), side, side)
    return values.astype(np.float32)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
