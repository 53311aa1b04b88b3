"""User data in a ``.npz`` file: ``x_train``, ``x_test`` and optional ``y_train``, ``y_test``.

Loaded with ``allow_pickle=False`` always: an ``.npz`` can carry pickled object arrays, and a
data file must never run code. Images may be (N, H, W), (N, C, H, W) or (N, H, W, C); the last is
recognised when axis 1 cannot be a channel count (not 1, 3 or 4) but the last axis can.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nestc.data.dataset import Split
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


def _channels_first(x: np.ndarray) -> np.ndarray:
    """NHWC to NCHW when the shape can only be read as NHWC; anything else unchanged."""
    if x.ndim == 4 and x.shape[1] not in _CHANNEL_COUNTS and x.shape[3] in _CHANNEL_COUNTS:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x
