"""Checkpoints written by another version: refused with one line naming the file, never a KeyError traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from nestc.errors import OptionError
from nestc.schedule.state import read_state
from nestc.training import checkpoint as ckpt


def test_a_training_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    """A format-1 file without the entries a resume reads failed with ``KeyError: 'plan'``."""
    path = tmp_path / "run.ckpt"
    torch.save({"format": ckpt.FORMAT, "model": {}}, path)
    with pytest.raises(OptionError, match=r"run\.ckpt' lacks epoch, fit_index.*another nestc version"):
        ckpt.load(path)


def test_a_compress_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    """A checkpoint whose counters lack ``step`` passed the identity check and failed with ``KeyError: 'step'``."""
    path = tmp_path / "out.onnx.ckpt"
    state = torch.frombuffer(bytearray(json.dumps({"identity": "x"}).encode()), dtype=torch.uint8).clone()
    buffer = io.BytesIO()
    torch.save({"current": {"onnx": torch.zeros(1, dtype=torch.uint8), "masks": {}}, "state": state}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(OptionError, match=r"unreadable \(it lacks epochs_used, history, phase, step"):
        read_state(path)
