"""Saving and restoring a grow-and-prune run between steps, so ``--resume`` continues a killed run.

A checkpoint holds the current and best networks as emitted ONNX bytes plus their connection masks,
and the schedule's counters as JSON, all inside one ``torch.save`` file of plain tensors that loads
with ``weights_only=True`` (a checkpoint is data, never code). Written atomically after every step.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import onnx
import torch

from nestc.errors import OptionError
from nestc.fileio import atomic_write_bytes
from nestc.ir.emit import emit_model
from nestc.ir.network import Network

STATE_KEYS = frozenset({"step", "epochs_used", "phase", "history"})
"""Counters every checkpoint of a run holds; a file without them was not written by this version's runs."""


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def pack_network(net: Network) -> dict[str, Any]:
    """Emitted model bytes and masks of ``net``."""
    masks = {name: net.mask(name).detach().cpu().clone() for name in net.masks}  # type: ignore[union-attr]
    return {"onnx": _bytes_tensor(emit_model(net).SerializeToString()), "masks": masks}


def unpack_network(packed: dict[str, Any], device: torch.device) -> Network:
    """Rebuild a network saved by :func:`pack_network` on ``device``."""
    return Network.with_masks(onnx.load_model_from_string(packed["onnx"].numpy().tobytes()), packed["masks"], device)


def save_checkpoint(path: str | os.PathLike, current: Network, best: Network | None, state: dict[str, Any]) -> None:
    """Write the run's state to ``path`` atomically."""
    payload = {"current": pack_network(current), "state": _bytes_tensor(json.dumps(state).encode())}
    if best is not None:
        payload["best"] = pack_network(best)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        state = json.loads(payload["state"].numpy().tobytes().decode())
        missing = sorted({"onnx", "masks"} - payload["current"].keys()) + sorted(STATE_KEYS - state.keys())
    except Exception as exc:  # a torn or foreign file: torch and json raise many types
        raise OptionError(f"--resume: checkpoint {path} is unreadable ({type(exc).__name__}); "
                          "delete it to start over") from exc
    if missing:  # another version's file: the resumed run failed on the first absent entry, a KeyError traceback
        raise OptionError(f"--resume: checkpoint {path} is unreadable (it lacks {', '.join(missing)}: written by "
                          "another nestc version); delete it to start over")
    return payload, state


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """Only the schedule's counters of a checkpoint, to check it belongs to this run before any work."""
    return _read(path)[1]


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[Network, Network | None, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    payload, state = _read(path)
    best = unpack_network(payload["best"], device) if "best" in payload else None
    return unpack_network(payload["current"], device), best, state
