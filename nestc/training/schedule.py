"""Optimizer construction and a learning-rate schedule measured in optimizer steps.

Both are rebuilt by every ``fit`` because NeST replaces parameter tensors between fits. The schedule
is a small class of our own rather than a ``torch.optim.lr_scheduler``: it has to support halving
the rate after a NaN rollback and exact save/restore, and it writes the rate into the optimizer as a
plain Python float, which costs nothing and forces no device sync.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nestc.errors import OptionError
from nestc.training.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9, or AdamW, over the model's trainable parameters.

    ``"adam"`` means AdamW: with Adam, L2 weight decay is rescaled by the adaptive denominators and
    barely shrinks large weights, which defeats magnitude pruning.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise OptionError("the model has no trainable parameters; there is nothing to train")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class LRSchedule:
    """Linear warmup, then cosine decay to 0 (or a constant rate) over ``total_steps``.

    Args:
        base_lr: peak learning rate.
        total_steps: optimizer steps of the whole fit.
        warmup_steps: steps of linear warmup from ``base_lr / warmup_steps`` to ``base_lr``.
        cosine: decay to zero along a half cosine after warmup; otherwise stay at ``base_lr``.
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int, cosine: bool) -> None:
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, total_steps)
        self.cosine = cosine
        self.step = 0
        self.scale = 1.0  # halved by each NaN rollback, kept for the rest of the fit

    def rate(self, step: int) -> float:
        """Learning rate used by optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        elif self.cosine:
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0
        return self.base_lr * self.scale * factor

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set the rate for the next optimizer step and advance."""
        lr = self.rate(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.step += 1

    def state_dict(self) -> dict[str, float | int]:
        """Everything needed to continue exactly where this schedule stands."""
        return {"step": self.step, "scale": self.scale}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restore a :meth:`state_dict`."""
        self.step = int(state["step"])
        self.scale = float(state["scale"])
