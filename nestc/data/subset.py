"""Class-stratified subsets, shared by ``limit`` and by the embedded-subset builder.

A plain first-N cut of a sorted or class-blocked file can miss whole classes; a stratified pick
keeps every class (as far as ``n`` allows) and, with a fixed seed, gives the same samples on every
machine, so quick runs and the shipped subset are reproducible.
"""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` samples spread evenly over the classes, sorted ascending.

    Samples are shuffled with ``seed``, ranked within their class, then taken round-robin (all
    rank-0 samples, then rank-1, ...), so class counts differ by at most one while every class
    still has samples left.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    rank = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(shuffled):
        members = shuffled == cls
        rank[members] = np.arange(int(members.sum()))
    picked = order[np.lexsort((np.arange(len(labels)), rank))][:n]
    return np.sort(picked)


TEST_FRACTION = 0.2
"""Share of each class held out as the test split of data that come without one."""
SPLIT_SEED = 0


def held_out(labels: np.ndarray, fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """A boolean mask of ``fraction`` of each class's samples (rounded), picked with ``seed``.

    The test split of data that come without one (an image folder with no ``test/``, an ``.npz`` with no
    ``x_test``); the same labels give the same split on every machine.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        mask[rng.permutation(members)[: round(len(members) * fraction)]] = True
    return mask
