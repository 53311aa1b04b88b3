"""Forward passes without training: evaluation metrics and logits, plus the device-side tally.

Evaluation runs after every grow and prune step, so it follows the trainer's rules for speed: data
stay on the device, metrics accumulate there, and the host reads them once at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nestc.errors import OptionError
from nestc.training.data import DeviceData
from nestc.training.state import training_mode


class Tally:
    """Running loss sum and correct count kept on the device: adding never syncs, reading syncs once."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.float64)

    def add(self, loss: torch.Tensor, weight: int, logits: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Add ``weight * loss`` and, with labels, the batch's count of correct top-1 predictions."""
        self.loss.add_(loss.detach(), alpha=weight)
        if labels is not None:
            self.correct.add_((logits.argmax(dim=1) == labels).sum())

    def totals(self, *extra: torch.Tensor) -> torch.Tensor:
        """``[loss sum, correct, *extra]`` as one float64 tensor, ready for one read or all-reduce."""
        return torch.stack([self.loss, self.correct, *(e.to(self.loss.dtype) for e in extra)])


CPU_EVAL_BATCH = 256
"""Samples per forward pass without training on a CPU; other devices take ``ACCELERATOR_EVAL_BATCH``.

A batch of 1024 spills a CPU's caches: on one core of a 2-core Xeon, LeNet-5, a ResNet-18 seed and a
small MobileNet-style net evaluated 1.35x, 2.0x and 1.8x slower at 1024 than at 256. Their logits were
bit-identical at every batch size tried (32 to 1024), so accuracies do not change; a summed loss can
differ in its last float32 bits. A GPU needs the larger batch to stay busy.
"""
ACCELERATOR_EVAL_BATCH = 1024


def eval_batch_size(device: torch.device) -> int:
    """The batch size for evaluation and prediction on ``device``."""
    return CPU_EVAL_BATCH if device.type == "cpu" else ACCELERATOR_EVAL_BATCH


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context (cheaper than a disabled one)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def forward_batches(model: nn.Module, data: DeviceData, batch_size: int,
                    amp: bool) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(start, float32 logits, labels)`` per batch, in order, in eval mode without gradients.

    Every submodule's train/eval flag is restored afterwards.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise OptionError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model.to(data.device)
    with training_mode(model, False), torch.no_grad():
        for start in range(0, len(data), batch_size):
            xb, yb, _ = data.slice(start, start + batch_size)
            with autocast(data.device, amp):
                logits = model(xb)
            yield start, logits.float(), yb


def evaluate(model: nn.Module, data: DeviceData, batch_size: int, amp: bool) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy over labeled ``data``."""
    tally = Tally(data.device)
    for _, logits, labels in forward_batches(model, data, batch_size, amp):
        assert labels is not None, "callers evaluate labeled data only (Trainer.evaluate refuses y=None)"
        tally.add(F.cross_entropy(logits, labels, reduction="sum"), 1, logits, labels)
    loss_total, correct_total = tally.totals().tolist()
    return loss_total / len(data), correct_total / len(data)


def predict_logits(model: nn.Module, data: DeviceData, batch_size: int, amp: bool) -> torch.Tensor:
    """All logits as one float32 CPU tensor, copied batch by batch without stalling the GPU."""
    out: torch.Tensor | None = None
    cuda = data.device.type == "cuda"
    for start, logits, _ in forward_batches(model, data, batch_size, amp):
        if out is None:
            out = torch.empty((len(data), *logits.shape[1:]), dtype=torch.float32, pin_memory=cuda)
        out[start:start + len(logits)].copy_(logits, non_blocking=True)
    if cuda:
        torch.cuda.synchronize(data.device)  # the non-blocking copies must land before the caller reads
    assert out is not None  # place() refuses empty data
    return out
