"""Normalise a data set and lay its samples out the way a model's input wants them.

Models of the same data differ in layout: LeNet-300-100 takes ``[N, 784]``, LeNet-5
``[N, 1, 28, 28]``, Keras exports ``[N, 28, 28, 1]``. Reshaping that keeps every value is done
silently. Images of another height and width are fitted the two ways models are commonly trained on
such data (``SPATIAL_FITS``): centred zero padding, as LeNet-5 met MNIST (28x28 centred in 32x32), or
bilinear resizing, as torchvision's ``Resize`` does; :mod:`nestc.model_data` picks the one under which
a trained model classifies best. Anything else that would invent or drop data (1 grey channel into a
3-channel model) is a DataError naming both shapes, so the user fixes the data, not nestc.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from math import prod

import numpy as np

from nestc.data.dataset import Dataset
from nestc.errors import DataError, OptionError

Dim = int | str | None

SPATIAL_FITS = ("pad", "resize")
"""``pad``: centred zero padding in raw pixels (a centred crop where the model's input is smaller);
``resize``: bilinear resizing (antialiased when shrinking)."""


def fit_to_input(
    ds: Dataset,
    input_shape: Sequence[Dim],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    model_label: str = "model",
    spatial: str | None = None,
    pixels: bool = False,
) -> Dataset:
    """A new Dataset, normalised per channel and shaped as ``input_shape`` (batch dim first).

    ``mean``/``std`` default to the data set's own; each must have 1 value or one per channel
    (per feature for tabular data). Dims that are not positive ints (``"N"``, ``None``, ``-1``)
    match any size. The returned ``mean``/``std`` are the ones applied. Images of another height and
    width are fitted by ``spatial`` (one of ``SPATIAL_FITS``; default: ``pad`` when they fit inside the
    model's input, else ``resize``), and ``input_fit`` says how. ``pixels``: the model takes uint8 pixels, so
    the prepared values are rounded and saturated to whole numbers in 0..255, as an image pipeline hands them
    over (resizing makes fractions); the arrays stay float32, holding those numbers.
    """
    channels = ds.x_train.shape[1]
    m = _per_channel("--mean", ds.mean if mean is None else mean, channels, ds.name)
    s = _per_channel("--std", ds.std if std is None else std, channels, ds.name)
    if not (s > 0).all():
        raise OptionError(f"--std must be positive; got {tuple(float(v) for v in s)}")
    size = spatial_target(ds.x_train.shape[1:], tuple(input_shape))
    how = spatial or default_spatial_fit(ds.x_train.shape[1:], size)
    if how not in SPATIAL_FITS:
        raise OptionError(f"spatial fit {how!r}: use one of {', '.join(SPATIAL_FITS)}")
    sample = ds.x_train.shape[1:] if size is None else (channels, *size)
    arrange = _arrangement(ds.name, sample, tuple(input_shape), model_label)
    axes = (1, channels) + (1,) * (ds.x_train.ndim - 2)
    m, s = m.reshape(axes), s.reshape(axes)

    def prepare(x: np.ndarray) -> np.ndarray:
        if size is not None:
            x = _fit_size(x, size, how)
        x = arrange((x - m) / s)
        return np.ascontiguousarray(np.clip(np.rint(x), 0, 255) if pixels else x, dtype=np.float32)

    return replace(
        ds,
        x_train=prepare(ds.x_train),
        x_test=prepare(ds.x_test),
        mean=tuple(float(v) for v in m.ravel()),
        std=tuple(float(v) for v in s.ravel()),
        input_fit="" if size is None else f"{_size(ds.x_train.shape[2:])} -> {_size(size)} ({how})",
        spatial_fit=None if size is None else how,
    )


def spatial_target(sample: tuple[int, ...], target: tuple[Dim, ...]) -> tuple[int, int] | None:
    """The model's height and width when images ``sample`` (C, H, W) must change size to meet ``target``.

    None when they need not, or cannot: the model must take the images' channel count (channels first
    or last) and state its height and width.
    """
    if len(sample) != 3:
        return None
    size = model_image_size(sample[0], target)
    return None if size is None or size == tuple(sample[1:]) else size


def model_image_size(channels: int, target: tuple[Dim, ...]) -> tuple[int, int] | None:
    """The height and width of model input ``target`` (batch first) for images of ``channels`` channels, first
    or last; None when it takes no such images or leaves their size open."""
    if len(target) != 4:
        return None
    for channel, height, width in ((target[1], target[2], target[3]), (target[3], target[1], target[2])):
        if channel == channels and _known(height) and _known(width):
            return int(height), int(width)  # type: ignore[arg-type]
    return None


def default_spatial_fit(sample: tuple[int, ...], size: tuple[int, int] | None) -> str:
    """``pad`` when the images fit inside the model's input (nothing is lost), else ``resize``."""
    if size is None or (sample[1] <= size[0] and sample[2] <= size[1]):
        return "pad"
    return "resize"


def _fit_size(x: np.ndarray, size: tuple[int, int], how: str) -> np.ndarray:
    """Raw images (N, C, h, w) at ``size``: centred zero padding / cropping, or bilinear resizing."""
    if how == "pad":
        out = np.zeros((*x.shape[:2], *size), dtype=x.dtype)
        src, dst = [], []
        for have, want in zip(x.shape[2:], size, strict=True):
            lost = max(have - want, 0) // 2
            gap = max(want - have, 0) // 2
            kept = min(have, want)
            src.append(slice(lost, lost + kept))
            dst.append(slice(gap, gap + kept))
        out[:, :, dst[0], dst[1]] = x[:, :, src[0], src[1]]
        return out
    import torch
    import torch.nn.functional as F

    shrink = x.shape[2] > size[0] or x.shape[3] > size[1]
    parts = [F.interpolate(torch.from_numpy(np.ascontiguousarray(x[i:i + 4096], dtype=np.float32)), size=size,
                           mode="bilinear", align_corners=False, antialias=shrink).numpy()
             for i in range(0, len(x), 4096)]
    return np.concatenate(parts) if parts else np.zeros((0, x.shape[1], *size), np.float32)


def _size(hw: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in hw)


def _per_channel(what: str, values: Sequence[float], channels: int, name: str) -> np.ndarray:
    """``values`` broadcast to one float32 per channel; any other length is an OptionError."""
    arr = np.asarray(values, dtype=np.float32).ravel()
    if arr.size not in (1, channels) or not np.isfinite(arr).all():
        accepted = "1 finite value" if channels == 1 else f"1 finite value or {channels}"
        raise OptionError(
            f"{what} has {arr.size} value(s) ({', '.join(f'{float(v):.6g}' for v in arr)}); data '{name}' has "
            f"{channels} channel(s): give {accepted}"
        )
    return np.broadcast_to(arr, (channels,)).copy()


def _arrangement(name: str, sample: tuple[int, ...], shape: tuple[Dim, ...], label: str
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """How to turn a batch of samples into the model's layout, or a DataError saying why not."""
    target = shape[1:]
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
                f"data '{name}' has {c}-channel samples of shape {sample}; {label} input expects "
                f"{_show(shape)}; nestc does not replicate or drop channels, give it data with the model's channels"
            )
    if len(sample) == 1 and all(_known(d) for d in target) and prod(target) == sample[0]:  # type: ignore[arg-type]
        return lambda x: x.reshape(len(x), *target)
    raise DataError(f"data '{name}' has samples of shape {sample}; {label} input expects {_show(shape)}")


def _known(dim: Dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _fits(sample: tuple[int, ...], target: tuple[Dim, ...]) -> bool:
    return len(sample) == len(target) and all(not _known(t) or t == s for s, t in zip(sample, target, strict=True))


def _show(shape: tuple[Dim, ...]) -> str:
    """``[N, 3, 32, 32]``: unknown dims print as their symbol, ``N`` (batch) or ``?``."""
    dims = [d if _known(d) or isinstance(d, str) else ("N" if i == 0 else "?") for i, d in enumerate(shape)]
    return f"[{', '.join(map(str, dims))}]"
