"""Models that take uint8 pixels, as edge image models do: the graph casts and scales its input itself.

nestc's data are float32 throughout; for such a model they must hold the whole pixel values 0..255 that the
model was fed (rounded where resizing made fractions), training must see exactly what onnxruntime sees, and
the written file must keep its uint8 input. Every accuracy here is checked against onnxruntime fed uint8
arrays directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from errors_helpers import assert_clean_failure, run_cli
from models import train_mlp_elsewhere
from onnx import TensorProto, numpy_helper

import nestc
from nestc import runtime
from nestc.data import fit_to_input, load_dataset
from nestc.errors import DataError
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig


def _pixels(x: np.ndarray) -> np.ndarray:
    """nestc's [0, 1] images as the uint8 pixels they were stored as."""
    return np.rint(x * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pixel_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP trained in plain PyTorch on uint8 images, which its graph casts and normalises (``Cast``, ``Sub``,
    ``Div``), exported by torch's legacy exporter."""
    raw = load_dataset("embedded")
    path = tmp_path_factory.mktemp("pixels") / "pixels.onnx"
    train_mlp_elsewhere(_pixels(raw.x_train), raw.y_train, path, inside=(raw.mean[0] * 255, raw.std[0] * 255))
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert model.graph.node[0].op_type == "Cast"
    return path


def _ort_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    sess = runtime.session(onnx.load(str(path)))
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    scores = sess.run(None, {sess.get_inputs()[0].name: images})[0]
    return float((scores.argmax(1) == labels).mean())


def test_pixel_model_is_evaluated_and_compressed_on_its_uint8_pixels(pixel_mlp: Path, tmp_path: Path) -> None:
    raw = load_dataset("embedded")
    expected = _ort_accuracy(pixel_mlp, _pixels(raw.x_test), raw.y_test)
    assert expected > 0.7
    report = nestc.evaluate(pixel_mlp, "embedded")
    assert report.accuracy == pytest.approx(expected, abs=1e-9)
    assert report.input_normalisation == {"mean": [0.0], "std": [pytest.approx(1 / 255)]}
    out = tmp_path / "small.onnx"
    result = nestc.compress(pixel_mlp, out, "embedded", NestConfig(max_epochs=2, max_acc_drop=2),
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    assert result.report["accuracy"]["before"] == pytest.approx(expected, abs=1e-9)
    assert result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]
    written = onnx.load(str(out))
    assert written.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert result.report["accuracy"]["after"] == pytest.approx(_ort_accuracy(out, _pixels(raw.x_test), raw.y_test),
                                                               abs=1e-9)
    assert nestc.validate(pixel_mlp, pixel_mlp, "embedded").ok


def test_pixel_model_compacts_and_validates_on_random_pixels(pixel_mlp: Path, tmp_path: Path) -> None:
    """A hidden unit without inputs carries a constant; compaction folds it, and validate, given no data,
    feeds both files random uint8 pixels (it refused such inputs before)."""
    model = onnx.load(str(pixel_mlp))
    weight = next(t for t in model.graph.initializer if list(t.dims) == [64, 784])
    values = numpy_helper.to_array(weight).copy()
    values[3] = 0.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    planted, out = tmp_path / "planted.onnx", tmp_path / "compact.onnx"
    onnx.save(model, str(planted))
    report = nestc.compact(planted, out)
    assert list(report.result.removed.values()) == [1]
    assert report.before.params - report.after.params == 784 + 1 + 10
    on_data = nestc.validate(planted, out, "embedded", samples=500)
    assert on_data.ok, on_data.outputs
    assert on_data.accuracy_original == on_data.accuracy_candidate
    on_random = nestc.validate(planted, out)
    assert on_random.ok and on_random.samples == 64


def test_resized_images_reach_a_pixel_model_as_whole_pixels() -> None:
    """Bilinear resizing makes fractions; a uint8 input gets them rounded and saturated to 0..255."""
    raw = load_dataset("embedded", limit=50)
    fitted = fit_to_input(raw, ["N", 1, 20, 20], mean=[0.0], std=[1 / 255], spatial="resize", pixels=True)
    floats = fit_to_input(raw, ["N", 1, 20, 20], mean=[0.0], std=[1 / 255], spatial="resize")
    assert fitted.x_test.dtype == np.float32
    assert np.array_equal(fitted.x_test, np.rint(fitted.x_test))
    assert fitted.x_test.min() >= 0 and fitted.x_test.max() <= 255
    assert not np.array_equal(floats.x_test, np.rint(floats.x_test)), "resizing must have made fractions"
    assert np.abs(fitted.x_test - floats.x_test).max() <= 0.5 + 1e-4


def test_pixel_model_refuses_a_normalisation_and_data_beyond_pixels(pixel_mlp: Path, tmp_path: Path) -> None:
    run = run_cli("eval", pixel_mlp, "--data", "embedded", "--mean", "0.5", "--std", "0.5")
    assert_clean_failure(run, "--mean/--std", "input 'x' takes uint8 pixels")
    rng = np.random.default_rng(0)
    data = tmp_path / "signed.npz"
    np.savez(data, x_train=rng.standard_normal((40, 28, 28)).astype(np.float32), y_train=rng.integers(0, 10, 40))
    with pytest.raises(DataError, match="input 'x' takes uint8 pixels"):
        nestc.evaluate(pixel_mlp, data)
