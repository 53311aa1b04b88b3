"""Crash-safe checkpoint files and the random-number state they must carry.

A checkpoint is written to a temporary file in the target folder and moved over the old one with
``os.replace``, which is atomic on POSIX and Windows: a job killed mid-write leaves the previous
checkpoint intact instead of a truncated file. Files are read with ``weights_only=True`` because a
checkpoint is data; unpickling arbitrary objects from a file would execute code. That is also why
random-number states are stored as tensors.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from nestc.errors import OptionError, first_line
from nestc.fileio import atomic_write_bytes

FORMAT = 1
REQUIRED = frozenset({"model", "optimizer", "schedule", "epoch", "fit_index", "rolled_back", "plan", "rng", "last"})
"""The entries ``Trainer`` saves in every checkpoint and reads back on a resume."""


def save_atomic(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``payload`` with ``torch.save`` so that ``path`` always holds a complete file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(target, buffer.getvalue())


def load(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` with tensors on the CPU, or ``None`` when there is no file.

    Loading the state into the model and optimizer moves each tensor to its parameter's device, except
    Adam's step counts, which stay where they are loaded and belong on the CPU: on a GPU every step
    would read each one back, a device sync per parameter.
    """
    if not Path(path).exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        # first_line: an empty file's EOFError has no text, which left the line ending in "checkpoint 'c':"
        raise OptionError(f"cannot read checkpoint {os.fspath(path)!r} ({first_line(exc)}); delete it to start "
                          "over") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise OptionError(f"{os.fspath(path)!r} is not a nestc training checkpoint (format {FORMAT})")
    missing = sorted(REQUIRED - payload.keys())
    if missing:  # another version's or a hand-made file: resuming it failed with a KeyError traceback
        raise OptionError(f"checkpoint {os.fspath(path)!r} lacks {', '.join(missing)}: written by another nestc "
                          "version or not by nestc; delete it to start over")
    return payload


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators a fit draws from: the CPU one and, when training on a GPU, that GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def stack_rng(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One tensor per generator with a leading rank axis, from every rank's :func:`rng_state`."""
    return {key: torch.stack([s[key].cpu() for s in states]) for key in states[0]}


def set_rng_state(stacked: dict[str, torch.Tensor], rank: int, device: torch.device) -> None:
    """Restore this rank's row of a :func:`stack_rng` result."""
    torch.set_rng_state(stacked["cpu"][rank].cpu())
    if device.type == "cuda" and "cuda" in stacked:
        torch.cuda.set_rng_state(stacked["cuda"][rank].cpu(), device)
