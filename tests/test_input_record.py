"""The input normalisation a model was trained under travels in the file nestc writes, and is what
``evaluate`` (and a second ``compress``) apply to it, instead of a fresh guess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import nestc
from nestc import runtime
from nestc.data import load_dataset
from nestc.input_record import KEY, recorded_input
from nestc.metadata import drop_metadata, metadata_value, set_metadata
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig


def _record(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[KEY])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("record")
    nestc.seed("lenet-300-100", folder / "seed.onnx", width_ratio=0.2)
    nestc.train(folder / "seed.onnx", folder / "trained.onnx", "embedded",
                TrainConfig(epochs=2, device="cpu", quiet=True))
    return folder / "trained.onnx"


def test_train_and_compress_record_the_inputs_they_trained_on(trained: Path, tmp_path: Path) -> None:
    stats = load_dataset("embedded")
    record = _record(trained)
    assert record["mean"] == pytest.approx(stats.mean) and record["std"] == pytest.approx(stats.std)
    assert record["spatial_fit"] is None
    result = nestc.compress(trained, tmp_path / "out.onnx", "embedded", NestConfig(max_epochs=1),
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    chosen = result.report["input_normalisation"]
    assert _record(tmp_path / "out.onnx") == {**chosen, "spatial_fit": None}


def test_evaluate_applies_the_recorded_normalisation(trained: Path, tmp_path: Path) -> None:
    """A record of [-1, 1] inputs (mean 0.5, std 0.5) is applied as it is, though the data set's own
    statistics would be the fresh choice for this model; checked against onnxruntime run by hand."""
    model = onnx.load(str(trained))
    entry = next(p for p in model.metadata_props if p.key == KEY)
    entry.value = json.dumps({"mean": [0.5], "std": [0.5], "spatial_fit": None})
    onnx.save(model, str(tmp_path / "recorded.onnx"))
    raw = load_dataset("embedded")
    scores = runtime.run(runtime.session(model), [((raw.x_test - 0.5) / 0.5).astype(np.float32)])[0]
    expected = float((scores.argmax(1) == raw.y_test).mean())
    assert nestc.evaluate(tmp_path / "recorded.onnx", "embedded").accuracy == pytest.approx(expected, abs=1e-12)
    assert nestc.evaluate(trained, "embedded").accuracy != pytest.approx(expected, abs=1e-3), \
        "the record must make a difference here, or this test checks nothing"


@pytest.mark.parametrize("value", ["not json", '{"mean": [0.5]}', '{"mean": ["a"], "std": [1]}',
                                   '{"mean": [0.1, 0.2], "std": [1, 1]}', '{"mean": [0.1], "std": [0]}',
                                   '{"mean": [NaN], "std": [1]}', '{"mean": [0], "std": [Infinity]}'])
def test_a_record_that_does_not_apply_is_ignored(value: str) -> None:
    model = onnx.ModelProto()
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY, value
    assert recorded_input(model, channels=3) is None


def test_validate_feeds_the_inputs_the_output_was_trained_on(trained: Path, tmp_path: Path) -> None:
    """``validate`` scores with the record too, also when only the candidate carries it (a user's export
    compared with nestc's output of it): its accuracy is the one ``evaluate`` gives the recorded file."""
    model = onnx.load(str(trained))
    entry = next(p for p in model.metadata_props if p.key == KEY)
    entry.value = json.dumps({"mean": [0.5], "std": [0.5], "spatial_fit": None})
    onnx.save(model, str(tmp_path / "recorded.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    expected = nestc.evaluate(tmp_path / "recorded.onnx", "embedded").accuracy
    report = nestc.validate(tmp_path / "bare.onnx", tmp_path / "recorded.onnx", data="embedded", samples=100_000)
    assert report.accuracy_original == pytest.approx(expected, abs=1e-12)
    assert report.accuracy_candidate == pytest.approx(expected, abs=1e-12)


def test_metadata_entry_replaced_once_and_user_entries_kept() -> None:
    """A second record replaces the first without touching what the exporter wrote around it."""
    model = onnx.ModelProto()
    onnx.helper.set_model_props(model, {"author": "someone", KEY: "old"})
    set_metadata(model, KEY, "new")
    assert [(p.key, p.value) for p in model.metadata_props] == [("author", "someone"), (KEY, "new")]
    drop_metadata(model, KEY)
    assert metadata_value(model, KEY) is None and metadata_value(model, "author") == "someone"


def test_given_normalisation_overrides_record_and_choice(trained: Path, tmp_path: Path) -> None:
    """``--mean``/``--std`` are applied as given by eval (checked against onnxruntime run by hand), and
    compress trains under them and records them for the output."""
    raw = load_dataset("embedded")
    scores = runtime.run(runtime.session(onnx.load(str(trained))), [((raw.x_test - 0.5) / 0.5).astype(np.float32)])[0]
    expected = float((scores.argmax(1) == raw.y_test).mean())
    given = nestc.evaluate(trained, "embedded", mean=[0.5], std=[0.5])
    assert given.accuracy == pytest.approx(expected, abs=1e-12)
    assert given.input_normalisation == {"mean": [0.5], "std": [0.5]} and given.input_fit is None
    assert nestc.evaluate(trained, "embedded").accuracy != pytest.approx(expected, abs=1e-3), \
        "the record must differ from what is given here, or this test checks nothing"
    result = nestc.compress(trained, tmp_path / "out.onnx", "embedded", NestConfig(max_epochs=0.5),
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None, mean=(0.5,), std=(0.5,))
    assert result.report["input_normalisation"] == {"mean": [0.5], "std": [0.5]}
    assert _record(tmp_path / "out.onnx") == {"mean": [0.5], "std": [0.5], "spatial_fit": None}


def test_eval_prints_a_normalisation_in_one_short_line(trained: Path, tmp_path: Path) -> None:
    """Tabular data have one mean and std per feature (784 here): eval's line gives their range, not
    every number; a value broadcast over the features is one number."""
    from click.testing import CliRunner

    from nestc.cli import cli
    from nestc.input_record import describe_values

    assert describe_values([0.286] * 784) == "0.286"
    assert describe_values([0.485, 0.456, 0.406]) == "0.485, 0.456, 0.406"
    assert describe_values([float(v) for v in range(784)]) == "0 to 783 (784 values)"
    rng = np.random.default_rng(0)
    x, y = rng.normal(5, 2, (300, 784)).astype(np.float32), rng.integers(0, 10, 300)
    np.savez(tmp_path / "tab.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    for model, expected in ((trained, "inputs: mean 0.286, std 0.353"), (tmp_path / "fresh.onnx", "(784 values)")):
        if not model.exists():
            nestc.seed("lenet-300-100", model, width_ratio=0.2)  # no record: the data set's own statistics
        run = CliRunner().invoke(cli, ["eval", str(model), "--data", str(tmp_path / "tab.npz")])
        assert run.exit_code == 0, run.output
        line = run.output.splitlines()[-1]
        assert expected in line and len(line) < 120, line
