"""User data in a ``.npz`` file: ``x_train``, ``x_test`` and optional ``y_train``, ``y_test``.

A file without ``x_test`` (and ``y_test``) is split as an image folder without ``test/`` is: 20 % of each
class (of the samples, when unlabeled) held out with a fixed seed, so the same file gives the same split.

Loaded with ``allow_pickle=False`` always: an ``.npz`` can carry pickled object arrays, and a
data file must never run code. Images may be (N, H, W), (N, C, H, W) or (N, H, W, C); the last is
recognised when axis 1 cannot be a channel count (not 1, 3 or 4) but the last axis can.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nestc.data.dataset import Split
from nestc.data.subset import TEST_FRACTION, held_out
from nestc.errors import DataError

_CHANNEL_COUNTS = (1, 3, 4)


def read_npz(path: Path) -> tuple[Split, Split]:
    """The training and test splits stored in ``path`` (labels None where the key is absent)."""
    if not zipfile.is_zipfile(path):  # else np.load reads it as a pickle and blames allow_pickle
        raise DataError(f"{path}: not a readable .npz file (no zip archive: corrupt, truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({' '.join(str(exc).split())})") from exc
    missing = [key for key in ("x_train", "x_test") if key not in arrays]
    if missing == ["x_test"] and "y_test" not in arrays and arrays["x_train"].ndim:
        return _hold_out(path, arrays["x_train"], arrays.get("y_train"))
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; found {', '.join(arrays) or 'nothing'}")
    return tuple(  # type: ignore[return-value]
        Split(
            _channels_first(arrays[f"x_{split}"]),
            arrays.get(f"y_{split}"),
            f"{path} [x_{split}]",
            f"{path} [y_{split}]",
        )
        for split in ("train", "test")
    )


def _hold_out(path: Path, x: np.ndarray, y: np.ndarray | None) -> tuple[Split, Split]:
    """The splits of a file with no test split: :data:`TEST_FRACTION` of each class held out for testing.

    Labels are grouped by row, so one-hot rows and ``(N, 1)`` columns are stratified as the indices they hold.
    """
    label_source = f"{path} [y_train]"
    groups = np.zeros(len(x), dtype=np.int64)
    if y is not None:
        if y.ndim == 0 or len(y) != len(x):
            raise DataError(f"{label_source}: expected {len(x)} labels (one per sample), got shape {y.shape}")
        if len(y):
            groups = np.unique(y.reshape(len(y), -1), axis=0, return_inverse=True)[1].ravel()
    test = held_out(groups)
    x = _channels_first(x)
    held = f"{path} [x_train: {TEST_FRACTION:.0%} held out for testing, the file has no x_test]"
    return (Split(x[~test], None if y is None else y[~test], f"{path} [x_train]", label_source),
            Split(x[test], None if y is None else y[test], held, label_source))


def _channels_first(x: np.ndarray) -> np.ndarray:
    """NHWC to NCHW when the shape can only be read as NHWC; anything else unchanged."""
    if x.ndim == 4 and x.shape[1] not in _CHANNEL_COUNTS and x.shape[3] in _CHANNEL_COUNTS:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x
