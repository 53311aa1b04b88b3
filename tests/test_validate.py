"""``nestc validate``: two models in onnxruntime on the same inputs, compared output by output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_data_download import serve
from test_data_formats import isolate, write_mnist

import nestc
from nestc.errors import DataError


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nestc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _perturbed(source: Path, target: Path, scale: float) -> None:
    model = onnx.load(str(source))
    first = model.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * scale, first.name))
    onnx.save(model, str(target))


def test_validate_accepts_equal_and_flags_different_models(tmp_path: Path) -> None:
    nestc.seed("lenet-5", tmp_path / "a.onnx", width_ratio=0.25)
    _perturbed(tmp_path / "a.onnx", tmp_path / "same.onnx", 1.0)
    _perturbed(tmp_path / "a.onnx", tmp_path / "other.onnx", 1.5)
    same = _cli("validate", "a.onnx", "same.onnx", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "max abs diff 0" in same.stdout and "[ok]" in same.stdout
    other = _cli("validate", "a.onnx", "other.onnx", "--data", "embedded", "--samples", "100", cwd=tmp_path)
    assert other.returncode == 1
    assert "DIFFERS" in other.stdout and "accuracy on 100 samples" in other.stdout


def test_validate_report_matches_a_float64_reference(tmp_path: Path) -> None:
    nestc.seed("lenet-300-100", tmp_path / "a.onnx", width_ratio=0.2)
    _perturbed(tmp_path / "a.onnx", tmp_path / "b.onnx", 1.001)
    report = nestc.validate(tmp_path / "a.onnx", tmp_path / "b.onnx", samples=16, atol=0.0, rtol=0.0)
    net_a = nestc.api.load_network(tmp_path / "a.onnx").double()
    net_b = nestc.api.load_network(tmp_path / "b.onnx").double()
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32).astype(np.float64)
    expected = np.abs(net_a.run_numpy(x)[0] - net_b.run_numpy(x)[0]).max()
    assert not report.ok
    assert expected > 0
    assert abs(report.outputs[0].max_abs - expected) <= 1e-3 * expected + 1e-6


def test_validate_downloads_a_named_data_set_it_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error for a data set not on disk says "get it with --download"; validate had no such option."""
    cache = isolate(monkeypatch, tmp_path)
    write_mnist(tmp_path / "server", n_test=20)
    serve(monkeypatch, "mnist", sorted((tmp_path / "server").iterdir()))
    nestc.seed("lenet-300-100", tmp_path / "a.onnx", width_ratio=0.2)
    with pytest.raises(DataError, match="--download"):
        nestc.validate(tmp_path / "a.onnx", tmp_path / "a.onnx", "mnist")
    report = nestc.validate(tmp_path / "a.onnx", tmp_path / "a.onnx", "mnist", download=True)
    assert report.ok and report.samples == 20 and (cache / "mnist").is_dir()
    assert "--download" in _cli("validate", "--help", cwd=tmp_path).stdout
