"""The mutable state of a fit (weights, optimizer, schedule) as one tree of tensors.

The NaN rollback keeps a copy of this tree in device memory; checkpoints write it to disk. Both go
through :func:`capture` and :func:`restore` so that the two can never disagree about what "the
state" is: restoring momentum but not weights, say, would make a rollback quietly wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nestc.training.schedule import LRSchedule


def capture(module: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> dict[str, Any]:
    """References to the live state (not a copy: see :func:`clone_tree`)."""
    return {"model": module.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}


def restore(state: dict[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer,
            schedule: LRSchedule) -> None:
    """Load a :func:`capture` tree (or its copy) back into the live objects."""
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(clone_tree(state["optimizer"]))  # the optimizer adopts these tensors
    schedule.load_state_dict(state["schedule"])


def clone_tree(tree: Any) -> Any:
    """Deep copy of nested dicts/lists/tuples, cloning tensors on their own device."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: clone_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(clone_tree(v) for v in tree)
    return tree


def all_finite(module: nn.Module) -> torch.Tensor:
    """A 0-dim bool tensor, on the parameters' device, telling whether every float weight is finite."""
    flags = [t.isfinite().all() for t in module.state_dict().values() if t.is_floating_point()]
    return torch.stack(flags).all() if flags else torch.tensor(True)


@contextmanager
def training_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """Switch ``module`` to train or eval mode and afterwards restore each submodule's own flag.

    A plain ``module.train(previous)`` would also flip submodules the caller had frozen on purpose
    (e.g. batch norm in eval mode).
    """
    previous = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield
    finally:
        for m, flag in previous:
            m.training = flag
