"""A tiny, exactly reproducible classification problem and MLP for smoke tests and benchmarks.

Checks of the trainer (and of distributed setups on a new cluster) need a task that any working
training loop solves in seconds and any broken one does not; Gaussian clusters around well-spaced
centres are such a task, and generating them needs no download.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
from torch import nn


def separable_problem(samples: int = 512, features: int = 16, classes: int = 4,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [samples, features], y int64 [samples])``: one Gaussian cluster per class.

    Centres lie at distance ~6 standard deviations from each other, so a linear classifier reaches
    (nearly) 100 % accuracy and a trainer that fails to is broken.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, size=samples)
    x = centres[y] + rng.normal(size=(samples, features))
    return x.astype(np.float32), y.astype(np.int64)


def mlp(sizes: Sequence[int] = (16, 32, 4), seed: int = 0) -> nn.Sequential:
    """Linear layers of the given widths with ReLU in between, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.default_generator.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        return nn.Sequential(*layers)
