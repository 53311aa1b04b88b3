"""Keras models as tf2onnx writes them: loaded, emitted and compressed, checked against onnxruntime.

The files under ``fixtures/tf2onnx`` are real tf2onnx 1.17 exports of trained Keras 3 models
(``fixtures/tf2onnx/make_fixtures.py`` rebuilds them where TensorFlow is installed; the suite does not
install it). They hold what hand-built imitations of that exporter may miss: NHWC inputs behind a
Transpose, Dense as MatMul + Add, shape arithmetic that TensorFlow's graph keeps, LayerNormalization
spelt out as ReduceMean arithmetic, Conv1D through Unsqueeze and Squeeze, causal padding as Pad,
UpSampling2D as Resize, a uint8 input cast and scaled in the graph.
"""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from nestc import api
from nestc.compression import compress
from nestc.ir.emit import emit_model
from nestc.model_data import accuracy_window
from nestc.schedule.config import NestConfig

pytestmark = pytest.mark.usefixtures("torch_single_thread")
FIXTURES = Path(__file__).parent / "fixtures" / "tf2onnx"
EXPORTS = sorted(FIXTURES.glob("*.onnx"))


def _inputs(path: Path, batch: int, seed: int) -> np.ndarray:
    """NHWC images as the model's input type takes them: pixels on [0, 1], or 0..255 for a uint8 input."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, 28, 28, 1))
    uint8 = onnx.load(path).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    return pixels.astype(np.uint8) if uint8 else (pixels / 255.0).astype(np.float32)


def test_every_fixture_is_a_tf2onnx_export() -> None:
    assert len(EXPORTS) == 11
    for path in EXPORTS:
        model = onnx.load(path)
        assert model.producer_name == "tf2onnx", path.name
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_loaded_network_matches_onnxruntime_at_any_batch(path: Path) -> None:
    net = api.load_network(path)
    for batch in (1, 9):
        x = _inputs(path, batch, seed=batch)
        (got,) = net.run_numpy(x)
        models.assert_close(got, models.ort_run(path, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_emitted_model_equals_the_export_in_onnxruntime(path: Path) -> None:
    emitted = emit_model(api.load_network(path))
    onnx.checker.check_model(emitted)
    x = _inputs(path, 7, seed=3)
    models.assert_close(models.ort_run(emitted, x), models.ort_run(path, x), rtol=1e-4, atol=1e-5)
    input_type = onnx.load(path).graph.input[0].type.tensor_type.elem_type
    assert emitted.graph.input[0].type.tensor_type.elem_type == input_type


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_compress_prunes_the_export_and_the_output_runs(tmp_path: Path, path: Path) -> None:
    output = tmp_path / f"{path.stem}.nest.onnx"
    result = compress(path, output, data="embedded", config=NestConfig(max_epochs=3))
    before, after = api.inspect(path), api.inspect(output)
    assert result.exit_code in (0, 3)
    assert after.nonzero_params < before.nonzero_params
    assert result.report["nonzero_params"]["after"] == after.nonzero_params
    x = _inputs(path, 5, seed=11)
    assert models.ort_run(output, x).shape == models.ort_run(path, x).shape


def test_a_net_trained_on_unit_pixels_is_fed_them_on_a_small_test_split() -> None:
    """Under raw 0..255 pixels this ReLU net classifies the embedded split's 500 test images 1.4 points better
    (by chance: its logits only grow) at a cross-entropy a hundred times higher; its own [0, 1] scale wins."""
    report = api.evaluate(FIXTURES / "concat.onnx")
    assert report.input_normalisation == {"mean": [0.0], "std": [1.0]}


@pytest.mark.parametrize(("best", "samples", "window"), [(0.9, 2000, 0.0134), (0.716, 500, 0.0403),
                                                         (0.999, 10_000, 0.01)])
def test_the_accuracy_window_is_two_standard_errors_or_a_point(best: float, samples: int, window: float) -> None:
    assert accuracy_window(best, samples) == pytest.approx(window, abs=1e-4)
