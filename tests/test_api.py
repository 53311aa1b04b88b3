"""The Python API as a program calls it: quiet unless asked, configs left as given, no state carried
from one call to the next."""

from __future__ import annotations

import copy
import os
import random
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nestc
from nestc import NestConfig, TrainConfig


@pytest.fixture
def seed_model(tmp_path: Path) -> Path:
    path = tmp_path / "seed.onnx"
    nestc.seed("lenet-300-100", path, width_ratio=0.1, density=0.3)
    return path


def test_compress_prints_nothing_unless_given_a_log(seed_model: Path, tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """A library call leaves stdout to its caller (a CI step may print JSON there); ``log`` gets the
    command's lines."""
    config = NestConfig(max_epochs=1)
    nestc.compress(seed_model, tmp_path / "quiet.onnx", "embedded", config, limit=300)
    assert capfd.readouterr() == ("", "")
    lines: list[str] = []
    nestc.compress(seed_model, tmp_path / "logged.onnx", "embedded", config, limit=300, log=lines.append)
    assert capfd.readouterr() == ("", "")
    assert any(line.startswith("input normalisation:") for line in lines), lines
    assert any(line.startswith("stopped:") for line in lines), lines


def test_train_returns_named_accuracies(seed_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Fields a caller can name, and still the pair the command line unpacks; nothing printed."""
    result = nestc.train(seed_model, tmp_path / "trained.onnx", config=TrainConfig(epochs=0.05, device="cpu"))
    before, after = result
    assert (before, after) == (result.accuracy_before, result.accuracy_after)
    assert isinstance(before, float) and isinstance(after, float)
    assert after == nestc.evaluate(tmp_path / "trained.onnx").accuracy
    assert capfd.readouterr() == ("", "")


def _process_state() -> dict[str, object]:
    """What a library call could change for the rest of its caller's process."""
    return {"threads": torch.get_num_threads(), "dtype": torch.get_default_dtype(), "grad": torch.is_grad_enabled(),
            "torch_rng": torch.get_rng_state().tolist(), "numpy_rng": np.random.get_state()[1].tolist(),
            "python_rng": random.getstate(), "warnings": list(warnings.filters), "environ": dict(os.environ),
            "cwd": os.getcwd(), "numpy_errors": np.geterr(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "signals": [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]}


def test_compress_twice_gives_the_same_result_and_leaves_the_process_alone(seed_model: Path, tmp_path: Path) -> None:
    """A second call in one process writes the same file and report as the first, takes its configs as
    they were given, and leaves random streams, threads, dtype, warnings and the environment as it found
    them (the first call may import modules that set their own warning filters: it runs before the snapshot)."""
    config, train_config = NestConfig(max_epochs=1), TrainConfig(device="cpu", quiet=True)
    given = copy.deepcopy((config, train_config))
    first = nestc.compress(seed_model, tmp_path / "first.onnx", "embedded", config, train_config, limit=300)
    state = _process_state()
    second = nestc.compress(str(seed_model), str(tmp_path / "second.onnx"), "embedded", config, train_config, limit=300)
    assert _process_state() == state
    assert (config, train_config) == given
    assert (tmp_path / "first.onnx").read_bytes() == (tmp_path / "second.onnx").read_bytes()

    def measured(report: dict) -> dict:
        timeless = {key: value for key, value in report.items() if key not in ("output", "seconds", "ort_latency_ms")}
        timeless["history"] = [{k: v for k, v in step.items() if k != "seconds"} for step in report["history"]]
        return timeless

    assert measured(first.report) == measured(second.report)
