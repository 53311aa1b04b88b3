"""Entries nestc keeps in a model's ``metadata_props``, one value per key.

ONNX stores metadata as a repeated list that may hold a key twice, and onnx's helper
(``set_model_props``) replaces the whole list, which would drop what the exporter wrote. nestc's
records (input convention, stored precision) must each stay a single entry next to the user's own.
"""

from __future__ import annotations

import onnx


def metadata_value(model: onnx.ModelProto, key: str) -> str | None:
    """The value stored under ``key`` (the last one, as a dict built from the list would keep)."""
    return {p.key: p.value for p in model.metadata_props}.get(key)


def drop_metadata(model: onnx.ModelProto, key: str) -> None:
    """Remove every entry under ``key``, keeping the others in their order."""
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """Store ``value`` as the only entry under ``key``."""
    drop_metadata(model, key)
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
