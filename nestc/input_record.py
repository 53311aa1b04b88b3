"""The input convention a model was trained under, kept in the metadata of the file nestc writes.

nestc picks a model's input normalisation and image fit by trying the usual candidates on test data
(:func:`nestc.model_data.choose_input_fit`), because exported files do not say how their inputs were
prepared. A file nestc wrote was trained under one of them. Choosing again when that file is
evaluated or compressed once more can pick another (a network near chance is as bad under all of
them: a compressed model reported at 10.0 % scored 6.0 % in ``nestc eval``), so the choice is written
into the model (``metadata_props`` key :data:`KEY`) and read back before any new choice is made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import onnx

from nestc.data import Dataset
from nestc.data.fit import SPATIAL_FITS
from nestc.metadata import metadata_value, set_metadata

KEY = "nestc.input"


def record_input(model: onnx.ModelProto, dataset: Dataset) -> None:
    """Store ``dataset``'s applied normalisation and image fit in ``model``, replacing an older record."""
    value = json.dumps({"mean": list(dataset.mean), "std": list(dataset.std), "spatial_fit": dataset.spatial_fit})
    set_metadata(model, KEY, value)


def recorded_input(model: onnx.ModelProto, channels: int
                   ) -> tuple[str | None, Sequence[float], Sequence[float]] | None:
    """``(spatial fit, mean, std)`` recorded in ``model`` when they apply to data with ``channels``
    channels (or features); None when there is no usable record (then the choice is made afresh)."""
    stored = metadata_value(model, KEY)
    if stored is None:
        return None
    try:
        record = json.loads(stored)
        mean, std, spatial = list(record["mean"]), list(record["std"]), record.get("spatial_fit")
        numbers = all(isinstance(v, int | float) and math.isfinite(v) for v in mean + std)  # json reads NaN
    except (ValueError, KeyError, TypeError):
        return None  # a record this version cannot read is no reason to refuse the model
    if not numbers or len(mean) != len(std) or len(mean) not in (1, channels) or min(std, default=0) <= 0:
        return None
    return (spatial if spatial in SPATIAL_FITS else None), mean, std


def inherit_record(target: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Give ``target`` the record of ``source`` when it has none (a user's export compared with nestc's
    output of it must be fed the inputs that output was trained on)."""
    stored = metadata_value(source, KEY)
    if metadata_value(target, KEY) is None and stored is not None:
        set_metadata(target, KEY, stored)


def describe_values(values: Sequence[float]) -> str:
    """A normalisation's ``mean`` or ``std`` for one line of output: one number when every channel has
    the same (a single value broadcast over channels or features), the range when there are many (the
    per-feature statistics of tabular data: hundreds of numbers), else each value."""
    if len(set(values)) <= 1:
        return ", ".join(f"{v:.4g}" for v in values[:1])
    if len(values) > 4:
        return f"{min(values):.4g} to {max(values):.4g} ({len(values)} values)"
    return ", ".join(f"{v:.4g}" for v in values)
