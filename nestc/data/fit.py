"""Normalise a data set and lay its samples out the way a model's input wants them.

Models of the same data differ in layout: LeNet-300-100 takes ``[N, 784]``, LeNet-5
``[N, 1, 28, 28]``, Keras exports ``[N, 28, 28, 1]``. Reshaping that keeps every value is done
silently; anything that would invent or drop data (1 grey channel into a 3-channel model, a
different image size) is a DataError naming both shapes, so the user fixes the data, not nestc.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from math import prod

import numpy as np

from nestc.data.dataset import Dataset
from nestc.errors import DataError, OptionError

Dim = int | str | None


def fit_to_input(
    ds: Dataset,
    input_shape: Sequence[Dim],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    model_label: str = "model",
) -> Dataset:
    """A new Dataset, normalised per channel and shaped as ``input_shape`` (batch dim first).

    ``mean``/``std`` default to the data set's own; each must have 1 value or one per channel
    (per feature for tabular data). Dims that are not positive ints (``"N"``, ``None``, ``-1``)
    match any size. The returned ``mean``/``std`` are the ones applied.
    """
    channels = ds.x_train.shape[1]
    m = _per_channel("mean", ds.mean if mean is None else mean, channels, ds.name)
    s = _per_channel("std", ds.std if std is None else std, channels, ds.name)
    if not (s > 0).all():
        raise OptionError(f"std must be positive; got {tuple(float(v) for v in s)}")
    arrange = _arrangement(ds, tuple(input_shape), model_label)
    axes = (1, channels) + (1,) * (ds.x_train.ndim - 2)
    m, s = m.reshape(axes), s.reshape(axes)

    def prepare(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(arrange((x - m) / s), dtype=np.float32)

    return replace(
        ds,
        x_train=prepare(ds.x_train),
        x_test=prepare(ds.x_test),
        mean=tuple(float(v) for v in m.ravel()),
        std=tuple(float(v) for v in s.ravel()),
    )


def _per_channel(what: str, values: Sequence[float], channels: int, name: str) -> np.ndarray:
    """``values`` broadcast to one float32 per channel; any other length is an OptionError."""
    arr = np.asarray(values, dtype=np.float32).ravel()
    if arr.size not in (1, channels) or not np.isfinite(arr).all():
        raise OptionError(
            f"{what} has {arr.size} value(s) {tuple(float(v) for v in arr)}; data '{name}' has {channels} "
            f"channel(s): give 1 finite value or {channels}"
        )
    return np.broadcast_to(arr, (channels,)).copy()


def _arrangement(ds: Dataset, shape: tuple[Dim, ...], label: str) -> Callable[[np.ndarray], np.ndarray]:
    """How to turn a batch of samples into the model's layout, or a DataError saying why not."""
    sample, target = ds.x_train.shape[1:], shape[1:]
    if _fits(sample, target):
        return lambda x: x
    if len(target) == 1 and _fits((prod(sample),), target):
        return lambda x: x.reshape(len(x), -1)
    if len(sample) == 3:
        c, h, w = sample
        if c == 1 and _fits((h, w), target):
            return lambda x: x[:, 0]
        if _fits((h, w, c), target):
            return lambda x: x.transpose(0, 2, 3, 1)
        if len(target) == 3 and (_fits((h, w), target[1:]) or _fits((h, w), target[:2])):
            raise DataError(
                f"data '{ds.name}' has {c}-channel samples of shape {sample}; {label} input expects "
                f"{_show(shape)}; nestc does not replicate or drop channels, give it data with the model's channels"
            )
    if len(sample) == 1 and all(_known(d) for d in target) and prod(target) == sample[0]:  # type: ignore[arg-type]
        return lambda x: x.reshape(len(x), *target)
    raise DataError(f"data '{ds.name}' has samples of shape {sample}; {label} input expects {_show(shape)}")


def _known(dim: Dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _fits(sample: tuple[int, ...], target: tuple[Dim, ...]) -> bool:
    return len(sample) == len(target) and all(not _known(t) or t == s for s, t in zip(sample, target, strict=True))


def _show(shape: tuple[Dim, ...]) -> str:
    """``[N, 3, 32, 32]``: unknown dims print as their symbol, ``N`` (batch) or ``?``."""
    dims = [d if _known(d) or isinstance(d, str) else ("N" if i == 0 else "?") for i, d in enumerate(shape)]
    return f"[{', '.join(map(str, dims))}]"
