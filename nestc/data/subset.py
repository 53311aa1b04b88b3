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
