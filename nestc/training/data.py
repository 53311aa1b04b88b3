"""Training data held as device tensors and batched by indexing, without a DataLoader.

MNIST- and CIFAR-sized sets fit in GPU memory many times over, and for the small networks NeST
compresses a DataLoader (workers, collation, host-to-device copies per batch) costs more than the
forward pass. So the whole set is moved to the device once per call and each batch is an
``index_select`` with a slice of a per-epoch random permutation. Only when a set does not fit does it
stay in pinned host memory and travel one batch at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nestc.errors import DataError, OptionError

ArrayLike = np.ndarray | torch.Tensor

DEVICE_SHARE = 0.5
"""Largest fraction of free GPU memory the data may take; the rest is left for activations."""


def as_tensor(array: ArrayLike, what: str) -> torch.Tensor:
    """A tensor view of ``array`` (no copy when possible); floating data becomes float32."""
    if isinstance(array, np.ndarray):
        if not array.flags.writeable:
            array = array.copy()  # torch.from_numpy would warn about read-only memory
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(array, torch.Tensor):
        tensor = array.detach()
    else:
        raise DataError(f"{what} must be a numpy array or torch tensor, got {type(array).__name__}")
    return tensor.float() if tensor.is_floating_point() else tensor


def _labels(y: ArrayLike, n: int) -> torch.Tensor:
    labels = as_tensor(y, "labels")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1 or len(labels) != n:
        raise DataError(f"labels must be {n} integer class indices (shape [{n}]), "
                        f"got dtype {labels.dtype} and shape {list(labels.shape)}")
    if n and int(labels.min()) < 0:
        raise DataError("labels must be class indices >= 0")
    return labels.long()


def _teacher(logits: ArrayLike, n: int) -> torch.Tensor:
    teacher = as_tensor(logits, "teacher_logits")
    if teacher.ndim != 2 or len(teacher) != n or not teacher.is_floating_point():
        raise DataError(f"teacher_logits must be float logits of shape [{n}, classes], "
                        f"got {teacher.dtype} {list(teacher.shape)}")
    if not _finite(teacher):
        raise DataError("teacher_logits contain NaN or Inf; the original model's outputs cannot be distilled")
    return teacher


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every element is finite, usually for the price of one sum.

    A NaN or Inf anywhere makes the sum non-finite; a sum is far cheaper on CPUs than ``isfinite``
    (one pass, no bool temporary), which matters when NeST refits on a host-resident set many times.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(tensor.isfinite().all())  # 2nd: the sum overflowed


def _fits(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return False
    return nbytes <= DEVICE_SHARE * free


@dataclass
class DeviceData:
    """Inputs, optional labels and optional teacher logits, aligned by sample index.

    ``resident`` tells whether the tensors already live on ``device`` (the fast path) or in pinned
    host memory (each batch is gathered on the host and copied asynchronously).
    """

    x: torch.Tensor
    y: torch.Tensor | None
    teacher: torch.Tensor | None
    device: torch.device
    resident: bool

    def __len__(self) -> int:
        return len(self.x)

    def _fields(self) -> list[torch.Tensor | None]:
        return [self.x, self.y, self.teacher]

    def _ship(self, parts: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        if self.resident:
            return parts
        return [None if t is None else t.pin_memory().to(self.device, non_blocking=True) for t in parts]

    def take(self, index: torch.Tensor) -> list[torch.Tensor | None]:
        """``[x, y, teacher]`` rows at ``index`` (on :attr:`index_device`), on the training device."""
        return self._ship([None if t is None else t.index_select(0, index) for t in self._fields()])

    def slice(self, start: int, stop: int) -> list[torch.Tensor | None]:
        """``[x, y, teacher]`` rows ``start:stop`` on the training device, in order (for evaluation)."""
        return self._ship([None if t is None else t[start:stop] for t in self._fields()])

    @property
    def index_device(self) -> torch.device:
        """Where index tensors for :meth:`take` must live."""
        return self.device if self.resident else torch.device("cpu")


def place(x: ArrayLike, y: ArrayLike | None, teacher: ArrayLike | None, device: torch.device) -> DeviceData:
    """Check that ``x``, ``y`` and ``teacher`` line up and put them where batches are cheapest.

    Tensors already on ``device`` are used in place, so a caller who trains many times on one set
    can move it once (``torch.as_tensor(x, device=trainer.device)``) and skip the copies.
    """
    inputs = as_tensor(x, "x")
    n = len(inputs) if inputs.ndim else 0
    if n == 0:
        raise DataError("the data set is empty")
    if inputs.is_floating_point() and not _finite(inputs):
        raise DataError("the input data contain NaN or Inf")
    parts = [inputs, None if y is None else _labels(y, n), None if teacher is None else _teacher(teacher, n)]
    placed, resident = stage(parts, device)
    return DeviceData(placed[0], placed[1], placed[2], device, resident)  # type: ignore[arg-type]


def stage(tensors: Sequence[torch.Tensor | None], device: torch.device) -> tuple[list[torch.Tensor | None], bool]:
    """``tensors`` on ``device`` when they fit there together, else in pinned host memory; and which it was.

    A data set too large for the GPU still trains: batches are gathered on the host and copied
    asynchronously, which pinned memory allows.
    """
    moving = sum(t.nbytes for t in tensors if t is not None and t.device != device)
    resident = _fits(device, moving)
    if resident:
        return [None if t is None else t.to(device) for t in tensors], True
    return [None if t is None else (t.cpu() if t.is_pinned() else t.cpu().pin_memory()) for t in tensors], False


def epoch_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from small integers (seed, fit number, epoch, rank...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0]) >> 1


def shard_order(n: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of a seeded random permutation of ``range(n)`` (on the CPU).

    Every rank draws the same permutation and takes every ``world_size``-th element starting at its
    rank, after dropping the ``n % world_size`` tail so that all ranks run the same number of steps
    (a rank that ran one step more would hang in DDP's gradient all-reduce). With a per-rank batch
    ``b``, step ``k`` of all ranks together covers permutation positions ``k*b*W .. (k+1)*b*W``,
    i.e. exactly the batch a single process with batch ``b*W`` would draw.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if world_size == 1:
        return order
    return order[: n - n % world_size][rank::world_size]


@dataclass(frozen=True)
class FitPlan:
    """Step arithmetic of one fit: how many samples per rank and step, steps per epoch and in all.

    Fractional epochs are rounded up to whole steps; the last epoch of a fit may be partial.
    """

    samples: int
    world_size: int
    local_batch: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def make(cls, samples: int, batch_size: int, world_size: int, epochs: float) -> FitPlan:
        """The plan for ``epochs`` passes over ``samples`` with global batch ``batch_size``."""
        if batch_size < world_size:
            raise OptionError(f"batch_size {batch_size} is smaller than the {world_size} processes sharing it")
        shard = samples // world_size
        if shard == 0:
            raise DataError(f"{samples} samples cannot be shared among {world_size} processes")
        local_batch = batch_size // world_size
        per_epoch = math.ceil(shard / local_batch)
        total = max(1, math.ceil(epochs * per_epoch - 1e-9))  # 0.1 * 10 must not become 2 steps
        return cls(samples, world_size, local_batch, per_epoch, total)

    @property
    def epochs(self) -> int:
        """Number of (possibly partial) epochs the fit runs."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        """Optimizer steps in ``epoch`` (0-based): a full epoch except perhaps the last."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
