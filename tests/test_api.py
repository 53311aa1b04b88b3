"""The Python API as a program calls it: quiet unless asked, configs left as given, no state carried
from one call to the next."""

from __future__ import annotations

from pathlib import Path

import pytest

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
