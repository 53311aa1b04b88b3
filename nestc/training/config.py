"""``TrainConfig``: every knob of one training run, checked before any work starts.

Options arrive from the command line and from the compressor's own schedules, so a bad value must
fail at once with an :class:`~nestc.errors.OptionError` that names the option and what would be
accepted, not minutes later deep inside PyTorch. Resolution of the ``"auto"`` values (device,
mixed precision) lives here too so that the trainer and the distributed helpers agree on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nestc.errors import OptionError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_epochs(epochs: object, option: str = "epochs") -> float:
    """Return ``epochs`` as a float, or raise when it is not a finite number > 0."""
    if not _number(epochs) or epochs <= 0:  # type: ignore[operator]
        raise OptionError(f"{option} must be a number > 0 (fractions such as 0.5 are fine), got {epochs!r}")
    return float(epochs)  # type: ignore[arg-type]


@dataclass
class TrainConfig:
    """Hyper-parameters and execution settings of :class:`~nestc.training.Trainer`.

    ``batch_size`` is the *global* batch: under data parallelism each of ``W`` processes takes
    ``batch_size // W`` samples per step, so results and learning rates do not depend on how many
    GPUs run the job.
    """

    epochs: float = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    quiet: bool = False
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        """Refuse a value that cannot work where the config is made, not when training starts; the
        trainer validates again, for fields changed since."""
        self.validate()

    def validate(self) -> None:
        """Raise :class:`OptionError` for the first value that cannot work."""
        check_epochs(self.epochs)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise OptionError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not _number(self.lr) or self.lr <= 0:
            raise OptionError(f"lr must be a number > 0, got {self.lr!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("amp", self.amp, AMP_MODES)
        _at_least("weight_decay", self.weight_decay, 0.0)
        _at_least("warmup_epochs", self.warmup_epochs, 0.0)
        if not _number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise OptionError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not _number(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            raise OptionError(f"distill_weight must be in [0, 1] (0: labels only, 1: teacher only), "
                              f"got {self.distill_weight!r}")
        if not _number(self.distill_temperature) or self.distill_temperature <= 0:
            raise OptionError(f"distill_temperature must be a number > 0, got {self.distill_temperature!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise OptionError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.quiet, bool):
            raise OptionError(f"quiet must be True or False, got {self.quiet!r}")
        if self.grad_clip is not None and (not _number(self.grad_clip) or self.grad_clip <= 0):
            raise OptionError(f"grad_clip must be a number > 0 or None, got {self.grad_clip!r}")
        _parse_device(self.device)


def _choice(option: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise OptionError(f"{option} must be one of {', '.join(accepted)}; got {value!r}")


def _at_least(option: str, value: object, low: float) -> None:
    if not _number(value) or value < low:  # type: ignore[operator]
        raise OptionError(f"{option} must be a number >= {low:g}, got {value!r}")


def _parse_device(spec: object) -> torch.device | None:
    """``None`` for ``"auto"``; otherwise a cpu/cuda ``torch.device`` or an OptionError."""
    if spec == "auto":
        return None
    try:
        device = torch.device(spec)  # type: ignore[call-overload]  # anything else is refused below
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise OptionError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return device


def resolve_device_type(spec: str) -> str:
    """``"cuda"`` or ``"cpu"``: what ``spec`` asks for, with ``"auto"`` preferring CUDA."""
    device = _parse_device(spec)
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {spec!r} was requested but this PyTorch sees no CUDA GPU; use device=cpu")
    return device.type


def resolve_device(spec: str, local_rank: int) -> torch.device:
    """The concrete device; a bare ``"cuda"``/``"auto"`` means this process's GPU (``local_rank``)."""
    device = _parse_device(spec)
    kind = resolve_device_type(spec)
    if kind == "cpu":
        return torch.device("cpu")
    if device is not None and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise OptionError(f"device {spec!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        return device
    return torch.device("cuda", local_rank)


def check_gpu_per_process(spec: str, world_size: int, local_rank: int) -> None:
    """Refuse GPU settings under which torchrun's processes would share a GPU.

    Each process trains on the GPU of its ``LOCAL_RANK``, and nccl, which their gradients are reduced
    with, fails on two processes of one GPU: so a fixed ``cuda:N``, and more processes on a machine
    than it has GPUs, are user mistakes to name before the process group is joined.
    """
    if world_size <= 1 or resolve_device_type(spec) != "cuda":
        return
    device = _parse_device(spec)
    if device is not None and device.index is not None:
        raise OptionError(f"device {spec!r}: under torchrun every process trains on the GPU of its LOCAL_RANK; "
                          "use device=cuda")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise OptionError(f"torchrun started a process with LOCAL_RANK {local_rank} on a machine with {count} GPU(s); "
                          f"start at most {count} per machine (--nproc-per-node)")


def resolve_amp(mode: str, device: torch.device) -> bool:
    """Whether to run forward passes under bf16 autocast.

    ``"auto"`` turns it on only on GPUs with native bf16 (Ampere or newer): there it roughly halves
    memory traffic at no accuracy cost for this kind of training, while on CPUs it is usually slower.
    The test is ``device``'s compute capability: ``torch.cuda.is_bf16_supported()`` asks about the
    current GPU instead, and says yes to older GPUs that only emulate bf16, slowly.
    """
    if mode == "off":
        return False
    supported = device.type == "cpu" or torch.cuda.get_device_capability(device) >= (8, 0)
    if mode == "bf16":
        if not supported:
            raise OptionError(f"amp=bf16 needs a GPU with native bfloat16 (compute capability 8.0, Ampere, or "
                              f"newer); {device} has none, use amp=off")
        return True
    return device.type == "cuda" and supported
