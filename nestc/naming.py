"""Fresh tensor names: exporters share one tensor between nodes, and a node that needs its own copy
gets a name nothing in the graph uses yet."""

from __future__ import annotations

from collections.abc import Container

INSERTED_BATCH_NORM = "/nestc_training_batch_norm"
"""Suffix of the name of every BatchNormalization nestc inserts to train a Conv with it; such a node is folded
into its Conv before anything is written (``nestc.passes.batch_norms``), so statistics do not count it."""


def unique_name(base: str, taken: Container[str]) -> str:
    """``base`` when it is free, else ``base_1``, ``base_2``, ... (the first one not in ``taken``)."""
    name, index = base, 0
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    return name


def claim_name(base: str, taken: set[str]) -> str:
    """:func:`unique_name`, added to ``taken`` so that the next new name in the same graph differs from it."""
    name = unique_name(base, taken)
    taken.add(name)
    return name
