"""The :class:`Dataset` record every loader returns, and the one place that builds it.

Each format reader only turns files into raw arrays (:class:`Split`); :func:`assemble` then applies
the checks every source needs (empty splits, NaN/Inf, bad labels, mismatched sample shapes), the
``limit`` subset, the [0, 1] pixel scaling and the normalisation statistics. Keeping that in one
function means a new format cannot forget a check, and every error names the file at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nestc.data.subset import stratified_indices
from nestc.errors import DataError


@dataclass
class Dataset:
    """A loaded data set: float32 arrays at raw scale (images in [0, 1]), NCHW or (N, F).

    ``mean``/``std`` are the data set's default per-channel normalisation; they are not applied
    here, :func:`nestc.data.fit_to_input` applies them, so the raw arrays stay reusable.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_fit: str = ""
    """How :func:`nestc.data.fit_to_input` changed the image size for a model (empty: it did not)."""
    spatial_fit: str | None = None
    """The fit (one of ``nestc.data.fit.SPATIAL_FITS``) that changed it, None when none did."""


@dataclass
class Split:
    """Raw arrays of one split as a reader found them, with the files to blame for each.

    ``x`` is uint8 (pixels, scaled to [0, 1] by :func:`assemble`) or any other real dtype (kept
    at its own scale); ``(N, H, W)`` gains a channel axis, ``(N, C, H, W)`` and ``(N, F)`` stay.
    """

    x: np.ndarray
    y: np.ndarray | None
    x_source: str
    y_source: str | None = None

    @property
    def label_source(self) -> str:
        return self.y_source or self.x_source


def assemble(
    name: str,
    train: Split,
    test: Split,
    *,
    limit: int | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Dataset:
    """Check both splits, keep at most ``limit`` training samples, and build the :class:`Dataset`.

    ``limit`` keeps a class-stratified subset (fixed seed, original order) when the training split
    is labelled, else its first ``limit`` samples. ``num_classes``, ``mean`` and ``std`` default
    to values computed from the (limited) training split.
    """
    for split, role in ((train, "training"), (test, "test")):
        if split.x.ndim not in (2, 3, 4):  # before len(): a 0-d array (np.savez(x_test=5)) has none
            raise DataError(f"{split.x_source}: samples must be (N, F), (N, H, W) or (N, C, H, W); "
                            f"got shape {split.x.shape}")
        if len(split.x) == 0:
            raise DataError(f"{split.x_source}: the {role} split is empty")
    if limit is not None and limit < len(train.x):
        keep = np.arange(limit) if train.y is None else stratified_indices(train.y, limit, seed=0)
        train = Split(train.x[keep], None if train.y is None else train.y[keep], train.x_source, train.y_source)
    x_train, y_train = _pixels(train), _labels(train, num_classes)
    x_test, y_test = _pixels(test), _labels(test, num_classes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{test.x_source}: test samples have shape {x_test.shape[1:]} but training samples "
            f"({train.x_source}) have shape {x_train.shape[1:]}"
        )
    if num_classes is None and (y_train is not None or y_test is not None):
        num_classes = 1 + max(int(y.max()) for y in (y_train, y_test) if y is not None)
    if mean is None or std is None:
        mean, std = channel_stats(x_train)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes, tuple(mean), tuple(std))


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (axis 1 is the channel, or the feature for tabular data).

    A constant channel gets std 1.0 so normalising it cannot divide by zero.
    """
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _pixels(split: Split) -> np.ndarray:
    """float32 samples with a channel axis; uint8 pixels become [0, 1], NaN/Inf are refused."""
    x = split.x  # (N, F), (N, H, W) or (N, C, H, W): assemble checked
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255)
    elif x.dtype.kind in "biuf":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{split.x_source}: the data holds NaN or Inf values")
    else:
        raise DataError(f"{split.x_source}: samples have dtype {x.dtype}; expected numbers")
    return x[:, None] if x.ndim == 3 else x


MAX_CLASSES = 2**31
"""Labels at or above this are no class index (and would wrap when cast to int64 from uint64)."""


def _labels(split: Split, num_classes: int | None) -> np.ndarray | None:
    """int64 labels, one per sample, whole and non-negative (and below ``num_classes`` if known).

    Class indices may also come as a column, ``(N, 1)`` (Keras' ``cifar10.load_data()``), or one-hot,
    ``(N, K)`` rows of a single 1 (Keras' ``to_categorical``); both are read as the indices they hold.
    """
    if split.y is None:
        return None
    y, source = _class_indices(np.asarray(split.y), split.label_source), split.label_source
    if y.ndim != 1 or len(y) != len(split.x):
        raise DataError(f"{source}: expected {len(split.x)} labels (one per sample), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{source}: labels must be whole numbers (class indices)")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels have dtype {y.dtype}; expected integer class indices")
    # splits are never empty here (assemble refuses them first); checked in the file's own type, since a
    # cast first would wrap huge values
    if y.min() < 0:
        raise DataError(f"{source}: labels must be non-negative class indices; found {int(y.min())}")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"{source}: label {int(y.max())} is too large for a class index")
    y = y.astype(np.int64)
    if num_classes is not None and y.max() >= num_classes:
        raise DataError(f"{source}: label {int(y.max())} is out of range for {num_classes} classes")
    return y


def _class_indices(y: np.ndarray, source: str) -> np.ndarray:
    """``(N, 1)`` columns and ``(N, K)`` one-hot rows as ``(N,)`` class indices; anything else as it is."""
    if y.ndim != 2 or y.dtype.kind not in "biuf" or not len(y):
        return y
    if y.shape[1] == 1:
        return y[:, 0]
    if not (((y == 0) | (y == 1)).all() and (y.sum(axis=1) == 1).all()):
        raise DataError(f"{source}: labels of shape {y.shape} must be one-hot rows (a single 1 each) or one class "
                        "index per sample; soft or multi-label targets are not class labels")
    return y.argmax(axis=1)
