"""End-to-end ``nestc compress`` and friends on real (embedded Fashion-MNIST) data, judged by onnxruntime."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import train_mlp_elsewhere

import nestc
from nestc import runtime
from nestc.channels.resize import NARROW_WIDTH
from nestc.data import fit_to_input, load_dataset
from nestc.errors import DataError
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nestc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def trained_mlp(tmp_path_factory) -> Path:
    """A LeNet-300-100 at half width trained briefly by ``nestc train`` (the CLI path users take)."""
    folder = tmp_path_factory.mktemp("trained")
    nestc.seed("lenet-300-100", folder / "seed.onnx", width_ratio=0.5)
    run = _cli("train", "seed.onnx", "--data", "embedded", "--epochs", "4", "--quiet", "--device", "cpu",
               "-o", "trained.onnx", cwd=folder)
    assert run.returncode == 0, run.stderr
    assert "test accuracy" in run.stdout
    return folder / "trained.onnx"


def test_train_reaches_real_accuracy(trained_mlp: Path) -> None:
    report = nestc.evaluate(trained_mlp, "embedded")
    assert report.accuracy is not None and report.accuracy > 0.7, "4 epochs on 2,000 Fashion-MNIST images"


def test_train_says_when_it_lost_accuracy(trained_mlp: Path) -> None:
    """Retraining a trained model at a destructive rate writes what came out, and says so on stderr."""
    run = _cli("train", "trained.onnx", "--data", "embedded", "--epochs", "0.5", "--lr", "20", "--quiet",
               "--device", "cpu", "-o", "wrecked.onnx", cwd=trained_mlp.parent)
    assert run.returncode == 0, run.stderr
    before, after = (float(v.rstrip("%")) for v in re.search(r"([\d.]+%) -> ([\d.]+%)", run.stdout).groups())
    assert after < before - 2, "a rate of 20 must wreck the network, or this test checks nothing"
    assert "note: training lost" in run.stderr and "--lr 20" in run.stderr


@pytest.mark.parametrize("head", [None, "Softmax", "LogSoftmax"])
def test_evaluate_loss_is_the_cross_entropy_of_any_score_head(trained_mlp: Path, tmp_path: Path,
                                                              head: str | None) -> None:
    """Logits, probabilities and log-probabilities of one network give one float64 cross-entropy."""
    model = onnx.load(str(trained_mlp))
    logits = model.graph.output[0].name
    if head is not None:
        model.graph.node.append(onnx.helper.make_node(head, [logits], ["scores"], axis=1))
        model.graph.output[0].name = "scores"
    onnx.save(model, str(tmp_path / "headed.onnx"))
    report = nestc.evaluate(tmp_path / "headed.onnx", "embedded")
    dims = [d.dim_value or "N" for d in model.graph.input[0].type.tensor_type.shape.dim]
    data = fit_to_input(load_dataset("embedded"), ["N", *dims[1:]])
    sess = runtime.session(onnx.load(str(trained_mlp)))
    z = runtime.run_batched(sess, data.x_test, 256)[0].astype(np.float64)
    z -= z.max(1, keepdims=True)
    expected = float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), data.y_test]))
    assert report.loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_fully_convolutional_scores_with_axes_of_size_one_are_class_scores(trained_mlp: Path,
                                                                              tmp_path: Path) -> None:
    """SqueezeNet and Caffe conversions end in a global pool: ``[N, classes, 1, 1]`` probabilities. They are
    evaluated and compressed as ``[N, classes]`` (they were refused: no output of shape [N, classes])
    and the written file keeps the output's shape."""
    model = onnx.load(str(trained_mlp))
    logits = model.graph.output[0].name
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "pool_axes"))
    model.graph.node.extend([onnx.helper.make_node("Unsqueeze", [logits, "pool_axes"], ["pooled"]),
                             onnx.helper.make_node("Softmax", ["pooled"], ["prob"], axis=1)])
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", 10, 1, 1]))
    onnx.save(model, str(tmp_path / "pooled.onnx"))
    flat, pooled = nestc.evaluate(trained_mlp, "embedded"), nestc.evaluate(tmp_path / "pooled.onnx", "embedded")
    assert pooled.accuracy == flat.accuracy and pooled.loss == pytest.approx(flat.loss, rel=1e-4)
    result = nestc.compress(tmp_path / "pooled.onnx", tmp_path / "out.onnx", "embedded",
                            NestConfig(max_epochs=2, max_acc_drop=2), TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    assert result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]
    assert result.report["accuracy"]["after"] >= flat.accuracy - 0.03
    sess = runtime.session(onnx.load(str(tmp_path / "out.onnx")))
    assert runtime.run_batched(sess, np.zeros((3, 1, 28, 28), np.float32))[0].shape == (3, 10, 1, 1)


def test_foreign_normalisation_is_detected_and_kept(tmp_path: Path) -> None:
    """A model trained elsewhere on raw [0, 1] inputs (torchvision's ``ToTensor`` alone) is evaluated and
    compressed on the inputs it expects, not on the data set's own statistics."""
    raw = load_dataset("embedded")
    train_mlp_elsewhere(raw.x_train, raw.y_train, tmp_path / "foreign.onnx")
    sess = runtime.session(onnx.load(str(tmp_path / "foreign.onnx")))

    def ort_accuracy(mean: float, std: float) -> float:
        scores = runtime.run_batched(sess, ((raw.x_test - mean) / std).astype(np.float32), 256)[0]
        return float((scores.argmax(1) == raw.y_test).mean())

    expected = ort_accuracy(0.0, 1.0)
    assert expected > ort_accuracy(raw.mean[0], raw.std[0]) + 0.05, "the wrong normalisation must cost accuracy"
    assert nestc.evaluate(tmp_path / "foreign.onnx", "embedded").accuracy == pytest.approx(expected, abs=1e-9)
    result = nestc.compress(tmp_path / "foreign.onnx", tmp_path / "small.onnx", "embedded",
                            NestConfig(max_epochs=2, max_acc_drop=2), TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    assert result.report["input_normalisation"] == {"mean": [0.0], "std": [1.0]}
    assert result.report["accuracy"]["before"] == pytest.approx(expected, abs=1e-9)


def test_raw_pixel_model_is_fed_raw_pixels(tmp_path: Path) -> None:
    """A model trained on the stored [0, 255] pixels (``torch.from_numpy(images).float()``) sees near-zero
    inputs under every normalisation of [0, 1] pixels; nestc must find that it wants raw pixels, report
    its true accuracy and write a model that keeps it on raw pixels."""
    raw = load_dataset("embedded")
    train_mlp_elsewhere(raw.x_train * 255, raw.y_train, tmp_path / "pixels.onnx")

    def ort_accuracy(path: Path) -> float:
        sess = runtime.session(onnx.load(str(path)))
        return float((runtime.run_batched(sess, raw.x_test * 255, 256)[0].argmax(1) == raw.y_test).mean())

    expected = ort_accuracy(tmp_path / "pixels.onnx")
    assert expected > 0.7
    assert nestc.evaluate(tmp_path / "pixels.onnx", "embedded").accuracy == pytest.approx(expected, abs=1e-9)
    result = nestc.compress(tmp_path / "pixels.onnx", tmp_path / "small.onnx", "embedded",
                            NestConfig(max_epochs=1, max_acc_drop=2), TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    assert result.report["input_normalisation"] == {"mean": [0.0], "std": [pytest.approx(1 / 255)]}
    assert result.report["accuracy"]["before"] == pytest.approx(expected, abs=1e-9)
    assert result.report["accuracy"]["after"] == pytest.approx(ort_accuracy(tmp_path / "small.onnx"), abs=1e-9)


def test_model_that_normalises_its_own_inputs_is_fed_unnormalised_pixels(tmp_path: Path) -> None:
    """A model whose graph starts with ``(x - mean) / std`` was fed [0, 1] pixels. Normalising them
    once more costs it less than the 5 points that make nestc leave the data set's statistics (3.8
    here), so the model's own arithmetic must decide, not the margin."""
    raw = load_dataset("embedded")
    train_mlp_elsewhere(raw.x_train, raw.y_train, tmp_path / "inside.onnx", inside=(raw.mean[0], raw.std[0]))
    sess = runtime.session(onnx.load(str(tmp_path / "inside.onnx")))

    def ort_accuracy(mean: float, std: float) -> float:
        scores = runtime.run_batched(sess, ((raw.x_test - mean) / std).astype(np.float32), 256)[0]
        return float((scores.argmax(1) == raw.y_test).mean())

    expected = ort_accuracy(0.0, 1.0)
    assert expected > ort_accuracy(raw.mean[0], raw.std[0]), "normalising twice must cost accuracy"
    assert nestc.evaluate(tmp_path / "inside.onnx", "embedded").accuracy == pytest.approx(expected, abs=1e-9)


def test_accuracy_tie_between_normalisations_is_settled_by_the_loss(tmp_path: Path) -> None:
    """A model trained on [-1, 1] inputs classifies Fashion-MNIST as well under the data set's statistics (a
    similar shift and scale); its cross-entropy tells them apart. Compressed under the statistics, the
    output was retrained for them and lost 7.6 points on the [-1, 1] inputs its user feeds."""
    raw = load_dataset("embedded")
    train_mlp_elsewhere((raw.x_train - 0.5) / 0.5, raw.y_train, tmp_path / "halves.onnx")

    def ort_accuracy(path: Path, mean: float, std: float) -> float:
        sess = runtime.session(onnx.load(str(path)))
        scores = runtime.run_batched(sess, ((raw.x_test - mean) / std).astype(np.float32), 256)[0]
        return float((scores.argmax(1) == raw.y_test).mean())

    expected = ort_accuracy(tmp_path / "halves.onnx", 0.5, 0.5)
    assert abs(expected - ort_accuracy(tmp_path / "halves.onnx", raw.mean[0], raw.std[0])) < 0.01, "a tie"
    result = nestc.compress(tmp_path / "halves.onnx", tmp_path / "small.onnx", "embedded",
                            NestConfig(max_epochs=1, max_acc_drop=0.5), TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    assert result.report["input_normalisation"] == {"mean": [0.5], "std": [0.5]}
    assert result.report["met_budget"]
    assert ort_accuracy(tmp_path / "small.onnx", 0.5, 0.5) >= expected - 0.005


def test_files_in_an_official_layout_offer_their_own_statistics(tmp_path: Path) -> None:
    """Fashion-MNIST images in MNIST's layout, and a model normalised with their statistics (as its author
    computed them): MNIST's published constants cost it 3 points, too few to be told apart by accuracy
    alone; the statistics of the files read are a candidate of their own and are chosen."""
    from test_data_formats import MNIST_NAMES, idx_bytes

    raw = load_dataset("embedded")
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        for name, arr in zip(MNIST_NAMES[split], (np.round(x[:, 0] * 255), y), strict=True):
            (folder / name).write_bytes(idx_bytes(arr.astype(np.uint8)))
    mean, std = float(raw.x_train.mean()), float(raw.x_train.std())
    train_mlp_elsewhere((raw.x_train - mean) / std, raw.y_train, tmp_path / "own.onnx")
    sess = runtime.session(onnx.load(str(tmp_path / "own.onnx")))
    expected = float((runtime.run_batched(sess, ((raw.x_test - mean) / std).astype(np.float32), 256)[0].argmax(1)
                      == raw.y_test).mean())
    report = nestc.evaluate(tmp_path / "own.onnx", "mnist", data_dir=tmp_path)
    chosen = report.input_normalisation
    assert chosen == {"mean": [pytest.approx(mean, abs=1e-4)], "std": [pytest.approx(std, abs=1e-4)]}
    assert report.accuracy == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("trained_on", ["pad", "resize"])
def test_image_size_fit_is_the_one_the_model_was_trained_with(tmp_path: Path, trained_on: str) -> None:
    """A 32x32 model meets 28x28 data the way it was trained: centred padding (LeNet-5 on MNIST) or
    resizing (torchvision's Resize); evaluation and compression use that fit, and the report says so."""
    raw = load_dataset("embedded")
    fitted = fit_to_input(raw, ["N", 1, 32, 32], spatial=trained_on)
    other = fit_to_input(raw, ["N", 1, 32, 32], spatial="resize" if trained_on == "pad" else "pad")
    train_mlp_elsewhere(fitted.x_train, raw.y_train, tmp_path / "m32.onnx")
    sess = runtime.session(onnx.load(str(tmp_path / "m32.onnx")))

    def ort_accuracy(data) -> float:
        return float((runtime.run_batched(sess, data.x_test, 256)[0].argmax(1) == raw.y_test).mean())

    expected = ort_accuracy(fitted)
    assert expected > ort_accuracy(other) + 0.05, "the other fit must cost accuracy"
    evaluated = nestc.evaluate(tmp_path / "m32.onnx", "embedded")
    assert evaluated.accuracy == pytest.approx(expected, abs=1e-9)
    assert evaluated.input_fit == f"28x28 -> 32x32 ({trained_on})"
    result = nestc.compress(tmp_path / "m32.onnx", tmp_path / "small.onnx", "embedded",
                            NestConfig(max_epochs=1, max_acc_drop=2), TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    assert result.report["input_fit"] == f"28x28 -> 32x32 ({trained_on})"
    assert result.report["accuracy"]["before"] == pytest.approx(expected, abs=1e-9)


def test_binary_scikit_learn_pipeline_keeps_its_own_scaling(tmp_path: Path) -> None:
    """A StandardScaler + MLPClassifier pipeline on a two-class table (breast cancer) scales its inputs
    itself: nestc must feed it raw features, which a two-class model shows by its accuracy (it is
    trained: 96 %, though not above "twice chance"), and compress it within budget."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:420], order[420:]
    np.savez(tmp_path / "cancer.npz", x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    with warnings.catch_warnings():  # the optimiser stops at max_iter before its tolerance: trained enough
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=300, random_state=0)).fit(x[train],
                                                                                                        y[train])
    expected = float(model.score(x[test], y[test]))
    (tmp_path / "cancer.onnx").write_bytes(to_onnx(model, x[:1]).SerializeToString())
    assert nestc.evaluate(tmp_path / "cancer.onnx", str(tmp_path / "cancer.npz")).accuracy == pytest.approx(expected)
    result = nestc.compress(tmp_path / "cancer.onnx", tmp_path / "small.onnx", str(tmp_path / "cancer.npz"),
                            NestConfig(max_epochs=4), TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    assert result.report["input_normalisation"] == {"mean": [0.0] * 30, "std": [1.0] * 30}
    assert result.report["validation"] == "test", "a trained two-class model is judged on the test split"
    assert result.met_budget and result.report["accuracy"]["after"] >= expected - 0.005
    assert result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]


def test_demo_grows_and_prunes_a_seed_within_its_budget(tmp_path: Path) -> None:
    """The README's main job: the written file is smaller than the seed it grew from, and the table's accuracy is
    the file's own by onnxruntime, within the demo's budget of the grown seed's."""
    run = _cli("demo", "-o", "demo.onnx", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    seed_nonzero = int(re.search(r"seed: .*: ([\d,]+) non-zero params", run.stdout).group(1).replace(",", ""))
    after = float(re.search(r"test accuracy\s+[\d.]+%\s+([\d.]+)%", run.stdout).group(1))
    reference = float(re.search(r"trained seed\s+([\d.]+)%", run.stdout).group(1))
    assert nestc.inspect(tmp_path / "demo.onnx").nonzero_params < seed_nonzero
    assert nestc.evaluate(tmp_path / "demo.onnx", "embedded").accuracy * 100 == pytest.approx(after, abs=0.005)
    assert after >= reference - 1.0 and "budget: 1 point" in run.stdout


def test_compress_trained_model_within_budget(trained_mlp: Path, tmp_path: Path) -> None:
    run = _cli("compress", str(trained_mlp), "--data", "embedded", "--max-epochs", "6", "--max-acc-drop", "2",
               "--quiet", "--device", "cpu", "-o", "small.onnx", "--report", "report.json", "--plot", "plot.png",
               cwd=tmp_path)
    assert run.returncode in (0, 3), run.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["nonzero_params"]["after"] < report["nonzero_params"]["before"]
    assert report["accuracy"]["measured_by"] == "onnxruntime"
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "small.onnx.ckpt").exists(), "the checkpoint is removed after success"
    onnx.checker.check_model(onnx.load(str(tmp_path / "small.onnx")))
    # the report's accuracy is the one onnxruntime gives the written file
    evaluated = nestc.evaluate(tmp_path / "small.onnx", "embedded")
    assert evaluated.accuracy == pytest.approx(report["accuracy"]["after"], abs=1e-9)
    assert report["met_budget"] == (run.returncode == 0)
    stats = nestc.inspect(tmp_path / "small.onnx")
    assert stats.nonzero_params == report["nonzero_params"]["after"]
    for step in report["history"]:
        assert set(step["widths"]) and step["nonzero_params"] <= step["params"]


def test_report_sizes_the_input_as_it_lies_on_disk(tmp_path: Path) -> None:
    """The report's "before" file size is the model file plus its external data, as the user has them,
    not the size of the loaded model serialised again (its tensors inline)."""
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.1, density=0.1)
    onnx.save_model(onnx.load(str(tmp_path / "seed.onnx")), str(tmp_path / "external.onnx"), save_as_external_data=True,
                    location="external.onnx.data", size_threshold=0)
    on_disk = sum((tmp_path / name).stat().st_size for name in ("external.onnx", "external.onnx.data"))
    result = nestc.compress(tmp_path / "external.onnx", tmp_path / "out.onnx", "embedded", NestConfig(max_epochs=0.1),
                            TrainConfig(device="cpu", quiet=True), limit=200, log=lambda _line: None)
    assert result.report["file_bytes"] == {"before": on_disk, "after": (tmp_path / "out.onnx").stat().st_size}


def test_latency_is_named_by_the_batch_it_timed(tmp_path: Path) -> None:
    """A test split of 100 samples times a batch of 100, and the report and table say 100, not 256."""
    data = load_dataset("embedded")
    np.savez(tmp_path / "small.npz", x_train=data.x_train[:200], y_train=data.y_train[:200],
             x_test=data.x_test[:100], y_test=data.y_test[:100])
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.1, density=0.1)
    run = _cli("compress", "seed.onnx", "--data", "small.npz", "--max-epochs", "0.1", "--quiet", "--device", "cpu",
               "-o", "out.onnx", "--report", "report.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    latency = json.loads((tmp_path / "report.json").read_text())["ort_latency_ms"]
    assert [list(latency["before"]), list(latency["after"])] == [["batch_1", "batch_100"]] * 2
    assert re.search(r"^ms batch 100 +[\d.]+ +[\d.]+$", run.stdout, re.MULTILINE), run.stdout


def _widths_and_sizes(row_or_stats) -> tuple:
    """Output widths of the Gemm layers and the four size counts, of a history row or of ``nestc.inspect``."""
    if isinstance(row_or_stats, dict):
        return row_or_stats["widths"], *(row_or_stats[k] for k in ("params", "nonzero_params", "macs", "nonzero_macs"))
    stats = row_or_stats
    return ({layer.node: layer.weight_shape[0] for layer in stats.layers}, stats.params, stats.nonzero_params,
            stats.macs, stats.nonzero_macs)


def test_report_names_the_history_row_of_the_written_network(trained_mlp: Path, tmp_path: Path) -> None:
    """A run that ends on an undone step wrote an earlier network: ``output_step`` names its row, whose widths
    and counts are the written file's (the last row's are the attempt's)."""
    config = NestConfig(prune_fraction=0.99, max_prune_fraction=0.99, min_prune_fraction=0.9, grow_prune_cycles=0,
                        max_epochs=1, retrain_epochs=0.1, recovery_epochs=0, lr_check_epochs=0)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    history = result.report["history"]
    assert not history[-1]["accepted"], "the run must end on an undone step, or this test checks nothing"
    row = history[result.report["output_step"]]
    assert row["accepted"]
    assert _widths_and_sizes(row) == _widths_and_sizes(nestc.inspect(tmp_path / "out.onnx"))


def test_dead_units_removed_from_the_result_get_a_history_row(tmp_path: Path) -> None:
    """When no pruning step ran, the network written is the trained seed less its dead units (compaction at the
    end): the row ``output_step`` names has the written file's widths, not the seed's."""
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.1)
    model = onnx.load(str(tmp_path / "seed.onnx"))
    for tensor in model.graph.initializer:
        if tensor.name.startswith("fc1"):  # fc1's first 15 units: no weights in, no bias
            array = onnx.numpy_helper.to_array(tensor).copy()
            array[:15] = 0
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(tmp_path / "dead.onnx"))
    result = nestc.compress(tmp_path / "dead.onnx", tmp_path / "out.onnx", "embedded", NestConfig(max_epochs=0.1),
                            TrainConfig(device="cpu", quiet=True), limit=200, log=lambda _line: None)
    history = result.report["history"]
    row = history[result.report["output_step"]]
    assert row["phase"] == "output" and row["widths"]["fc1"] == 15, "30 units less 15, not rounded"
    assert _widths_and_sizes(row) == _widths_and_sizes(nestc.inspect(tmp_path / "out.onnx"))


def test_plot_marks_undone_steps_and_the_written_network() -> None:
    """The plot's last point may be an undone attempt: its legends name undone steps, the written network's
    step and the accuracy curve (drawn on the second axis, which the legend of the first left out)."""
    from dataclasses import asdict

    from nestc.report import history_figure
    from nestc.schedule.runner import StepRecord

    def row(step: int, accepted: bool, nonzero: int, width: int) -> dict:
        return asdict(StepRecord(step, "prune", "prune", accepted, 0.9, 1000, nonzero, 900, nonzero, {"fc1": width},
                                 {"fc1": nonzero / 1000}, step, step))

    history = [row(0, True, 1000, 300), row(1, True, 500, 200), row(2, False, 200, 100)]
    widths_ax, params_ax, _ = history_figure(history, output_step=1).axes
    for ax, wanted in ((widths_ax, {"fc1"}), (params_ax, {"non-zero parameters", "held-out accuracy (right axis)"})):
        labels = {text.get_text() for text in ax.get_legend().get_texts()}
        assert wanted | {"undone step", "written (step 1)"} <= labels, labels


def test_stalled_pruning_regrows_and_keeps_the_smallest_network(trained_mlp: Path, tmp_path: Path) -> None:
    """Once an undone step leaves the step size below its minimum, a grow-and-prune cycle regrows
    connections of the best network by gradient; the written model is still the smallest one that met
    the budget, not the regrown one. ``grow_prune_cycles`` counts the cycles in a row that found nothing
    smaller: one that paid lets another start (with 3 fixed cycles, a 160-epoch LeNet-300-100 run stopped
    with half its budget left at 3,138 non-zeros where going on reached 2,620), one that did not ends the run."""
    config = NestConfig(max_acc_drop=3, prune_fraction=0.5, min_prune_fraction=0.3, grow_prune_cycles=1,
                        max_epochs=12, retrain_epochs=0.5, recovery_epochs=0, grow_epochs=0.5)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    history = result.report["history"]
    cycles = [i for i, h in enumerate(history) if h["phase"] == "regrow"]
    assert cycles, [h["action"] for h in history]

    def smallest_kept(rows: list[dict]) -> int:
        return min(h["nonzero_params"] for h in rows if h["accepted"] and h["phase"] != "regrow")

    for start, end in zip(cycles, [*cycles[1:], len(history)]):
        before = history[:start]
        assert not before[-1]["accepted"], "a cycle starts only after an undone step"
        assert history[start]["nonzero_params"] > smallest_kept(before), "connections were regrown"
        paid = smallest_kept(history[:end]) < smallest_kept(before)
        assert paid == (end < len(history)), f"cycle at row {start}: paid {paid}, another cycle after it: " \
                                             f"{end < len(history)}; {[h['action'] for h in history]}"
    assert result.report["stopped_by"].endswith("no grow-and-prune cycle left)")
    kept = [h["nonzero_params"] for h in history if h["accepted"] and h["phase"] != "regrow"]
    assert result.met_budget
    assert result.report["nonzero_params"]["after"] == min(kept)
    assert nestc.inspect(tmp_path / "out.onnx").nonzero_params == min(kept)


def test_no_cycle_starts_without_epochs_to_prune_after_it(trained_mlp: Path, tmp_path: Path) -> None:
    """A cycle's regrown network pays only through the pruning steps after it: when its training and
    one retraining no longer fit in the epoch budget, the run ends where pruning stalled instead."""
    config = NestConfig(max_acc_drop=3, prune_fraction=0.5, min_prune_fraction=0.3, grow_prune_cycles=1,
                        max_epochs=12, retrain_epochs=0.5, recovery_epochs=0, grow_epochs=11.8)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    history = result.report["history"]
    assert not [h for h in history if h["phase"] == "regrow"], [h["action"] for h in history]
    assert not history[-1]["accepted"], "pruning stalled on an undone step"
    assert history[-1]["epochs_used"] < config.max_epochs, "the run ended before the budget did"
    # more epochs would have bought a cycle: the reason says so, where it used to say none was left
    assert result.report["stopped_by"].endswith("the next grow-and-prune cycle needs more epochs than --max-epochs "
                                                "leaves"), result.report["stopped_by"]


def _step_percent(action: str) -> int:
    """The step size a pruning row names: ``prune 15% (1,234 connections)`` -> 15."""
    return int(re.match(r"prune (\d+)%", action).group(1))


def test_steps_that_cost_no_accuracy_grow_the_next_step(trained_mlp: Path, tmp_path: Path) -> None:
    """A step after which the network still scores the reference makes the next one 1.5x larger (up
    to ``max_prune_fraction``); a step that cost accuracy keeps the size; an undone one halves it."""
    config = NestConfig(max_acc_drop=2, prune_fraction=0.05, max_prune_fraction=0.3, min_prune_fraction=0.01,
                        grow_prune_cycles=0, max_epochs=4, retrain_epochs=0.5, recovery_epochs=0,
                        lr_check_epochs=0)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    reference = result.report["reference_val_accuracy"]
    steps = [h for h in result.report["history"] if h["phase"] == "prune"]
    assert len(steps) >= 4
    grew = 0
    for step, following in itertools.pairwise(steps):
        size = _step_percent(step["action"])
        if not step["accepted"]:
            expected = size / 2
        elif step["val_accuracy"] >= reference:
            expected, grew = min(size * 1.5, 30), grew + 1
        else:
            expected = size
        assert abs(_step_percent(following["action"]) - expected) <= 1, [h["action"] for h in steps]
    assert grew, "pruning 5 % of a trained network's smallest weights costs it nothing"
    assert max(_step_percent(h["action"]) for h in steps) > 5


def test_learning_rate_check_lowers_a_rate_that_wrecks_the_model(trained_mlp: Path, tmp_path: Path) -> None:
    """A rate the trained model cannot take is divided by sqrt(10) until a short fine-tune keeps the
    accuracy; pruning then retrains at that rate, and the original's weights were never touched."""
    config = NestConfig(max_epochs=3, max_acc_drop=2)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=1.0), log=lambda _line: None)
    history = result.report["history"]
    checks = [h for h in history if h["action"].startswith("fine-tune check")]
    assert checks and not checks[0]["accepted"], [h["action"] for h in history]
    assert checks[-1]["accepted"] and checks[-1]["val_accuracy"] >= history[0]["val_accuracy"] - 0.02
    assert result.report["learning_rate"] == pytest.approx(1.0 / 10 ** (0.5 * (len(checks) - 1)))
    assert all(h["nonzero_params"] == history[0]["nonzero_params"] for h in checks), "checks run on copies"
    assert any(h["phase"] == "prune" and h["accepted"] for h in history), "pruning retrained at the lowered rate"


def _collapsed_rows(history: list[dict]) -> list[dict]:
    return [h for h in history if "collapsed: lr" in h["action"]]


def test_a_step_whose_fit_collapses_is_tried_again_at_a_lower_rate(trained_mlp: Path, tmp_path: Path) -> None:
    """A rate that sends the pruned network to chance (here one no learning-rate check vetted) is the fault of
    the rate, not of the step: the step is undone and tried again, same size, at a rate sqrt(10) lower, and
    every later fit trains at the rate that worked."""
    config = NestConfig(max_epochs=4, max_acc_drop=2, lr_check_epochs=0, retrain_epochs=0.5)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=1.0), log=lambda _line: None)
    history = result.report["history"]
    steps = [h for h in history if h["phase"] == "prune"]
    collapsed = _collapsed_rows(history)
    assert collapsed and collapsed[0] is steps[0], [h["action"] for h in history]
    reference = history[0]["val_accuracy"]
    for row, following in itertools.pairwise(steps[:len(collapsed) + 1]):
        assert not row["accepted"] and row["val_accuracy"] < 0.1 + (reference - 0.1) / 2
        assert _step_percent(following["action"]) == _step_percent(row["action"]), "a retry keeps the step size"
    assert result.report["learning_rate"] == pytest.approx(1.0 / 10 ** (0.5 * len(collapsed)))
    assert steps[len(collapsed)]["accepted"], "the step trained at the lowered rate keeps the budget"
    assert result.met_budget and result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]


def test_a_collapse_lowers_the_rate_at_most_three_times(trained_mlp: Path, tmp_path: Path) -> None:
    """Three rates below the configured one, the learning-rate check's ladder; a fourth collapse is a failed
    step like any other, and halves the step size."""
    config = NestConfig(max_epochs=3, max_acc_drop=2, lr_check_epochs=0, retrain_epochs=0.25, recovery_epochs=0)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=20.0), log=lambda _line: None)
    history = result.report["history"]
    steps = [h for h in history if h["phase"] == "prune"]
    lowered = [re.search(r"collapsed: lr ([\d.]+) -> ([\d.]+)", h["action"]).groups() for h in _collapsed_rows(steps)]
    assert lowered == [("20", "6.32"), ("6.32", "2"), ("2", "0.632")], [h["action"] for h in steps]
    assert [_step_percent(h["action"]) for h in steps[:5]] == [20, 20, 20, 20, 10]
    fourth = steps[3]
    assert not fourth["accepted"] and fourth["val_accuracy"] < 0.1 + (history[0]["val_accuracy"] - 0.1) / 2, \
        "the fourth try collapsed too, and only halved the step"
    assert result.report["learning_rate"] == pytest.approx(20.0 / 10 ** 1.5)


def test_learning_rate_checks_stop_with_the_epoch_budget(trained_mlp: Path, tmp_path: Path) -> None:
    """Each check spends epochs: once the budget is gone no further rate is tried, and the run goes on at
    the next lower rate (the one the failed check would have tried next)."""
    config = NestConfig(max_epochs=0.5, lr_check_epochs=0.25, max_acc_drop=2)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=10.0), log=lambda _line: None)
    checks = [h for h in result.report["history"] if h["action"].startswith("fine-tune check")]
    assert [h["accepted"] for h in checks] == [False, False]
    assert checks[-1]["epochs_used"] == pytest.approx(0.5)
    assert result.report["learning_rate"] == pytest.approx(10.0 / 10)


def test_learning_rate_check_keeps_a_rate_the_model_takes(trained_mlp: Path, tmp_path: Path) -> None:
    config = NestConfig(max_epochs=2, max_acc_drop=2)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), log=lambda _line: None)
    assert result.report["learning_rate"] == TrainConfig().lr
    # a trained model is its own reference: the test accuracy the budget refers to is the input's
    assert result.report["reference_test_accuracy"] == pytest.approx(result.report["accuracy"]["before"], abs=0.002)
    assert not [h for h in result.report["history"] if h["action"].startswith("fine-tune check")]
    assert result.report["history"][1]["epochs_used"] == pytest.approx(0.25 + 1.0), "the check's epochs count"


def test_growing_a_trained_model_keeps_it_as_the_reference(trained_mlp: Path, tmp_path: Path) -> None:
    """``grow="on"`` on a trained model: growth starts from it (no seed training), at a rate the check
    found it can take, and the budget stays the original's. Before, growth retrained it at a rate that
    wrecked it and took the wrecked network as the reference: 72.8 % -> 10 %, reported as within budget."""
    config = NestConfig(grow="on", grow_steps=1, grow_epochs=0.5, neuron_growth=4, max_epochs=3, max_acc_drop=2)
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=1.0), log=lambda _line: None)
    report, history = result.report, result.report["history"]
    assert history[0]["action"] == "original model"
    assert any(h["action"].startswith("fine-tune check") for h in history), "the rate was checked before growth"
    grown = [h for h in history if h["phase"] == "grow"]
    assert len(grown) == config.grow_steps and grown[0]["action"].startswith("grow "), [h["action"] for h in grown]
    assert report["reference_test_accuracy"] == pytest.approx(report["accuracy"]["before"], abs=0.002)
    assert result.met_budget and report["accuracy"]["after"] >= report["accuracy"]["before"] - 0.02 - 0.002


def test_growth_ends_with_its_best_network(tmp_path: Path) -> None:
    """A growth step after which accuracy is lower than the best so far is undone: pruning starts from the
    best grown network and the budget refers to it. Kept as it stood, the last step's network was the
    reference (here 40.6 % after a best of 41.4 %; a LeNet-5 seed on scikit-learn's digits fell from 84.9 %
    to 41.8 % and was pruned against 67.3 %)."""
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.2, density=0.1)
    config = NestConfig(max_epochs=3, grow_epochs=0.25, grow_steps=6, neuron_growth=4)
    result = nestc.compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, lr=0.3, seed=1), limit=1000, log=lambda _line: None)
    grown = [h for h in result.report["history"] if h["phase"] == "grow"]
    undone = [h for h in grown if not h["accepted"]]
    assert undone, "this run has growth steps that lost accuracy"
    best = 0.0
    for row in grown:
        assert row["accepted"] == (row["val_accuracy"] >= best), row
        best = max(best, row["val_accuracy"])
    assert result.report["reference_val_accuracy"] == pytest.approx(best)


def test_default_budget_grows_on_a_small_training_split(trained_mlp: Path, tmp_path: Path) -> None:
    """Unset, the budget is 40 epochs or 2,000,000 samples' worth, a growth-phase fit 2 epochs or 100,000 samples'
    worth and the learning-rate check a quarter epoch or 12,500 samples' worth: on a small split the schedule's
    epochs are a few optimizer steps each. Set values stay."""
    assert NestConfig().epoch_budget(60_000) == 40 and NestConfig().epoch_budget(1_000) == 2_000
    assert NestConfig(max_epochs=3).epoch_budget(1_000) == 3
    assert NestConfig().growth_epochs(60_000) == 2 and NestConfig().growth_epochs(1_000) == 100
    assert NestConfig(grow_epochs=0.5).growth_epochs(1_000) == 0.5
    assert NestConfig().cycle_epochs == 2 and NestConfig(grow_epochs=0.5).cycle_epochs == 0.5
    # the learning-rate check: a quarter epoch, or 12,500 samples up to a sixteenth of the budget
    assert NestConfig().lr_check_fit(60_000, 40) == 0.25 and NestConfig().lr_check_fit(1_000, 2_000) == 12.5
    assert NestConfig().lr_check_fit(1_000, 40) == 2.5 and NestConfig().lr_check_fit(1_000, 2) == 0.25
    assert NestConfig(lr_check_epochs=0).lr_check_fit(1_000, 2_000) == 0
    lines: list[str] = []
    result = nestc.compress(trained_mlp, tmp_path / "out.onnx", "embedded", NestConfig(target_params=10**9),
                            TrainConfig(device="cpu", quiet=True), limit=500, log=lines.append)
    assert result.report["max_epochs"] == 4_000
    assert any(line.startswith("epoch budget: 4,000 epochs (2,000,000 training samples, 500 an epoch")
               for line in lines)


def test_max_epochs_caps_every_fit(tmp_path: Path) -> None:
    """--max-epochs is a cap, not a point after which no new step starts: a seed's first training (2 epochs
    by default) under a 0.5-epoch budget trains 0.5 epochs (it trained 2)."""
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.2, density=0.1)
    result = nestc.compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", NestConfig(max_epochs=0.5),
                            TrainConfig(device="cpu", quiet=True), limit=500, log=lambda _line: None)
    assert max(h["epochs_used"] for h in result.report["history"]) == pytest.approx(0.5)


def test_target_params_stops_the_run_or_says_it_was_missed(trained_mlp: Path, tmp_path: Path) -> None:
    """A reached target ends the run at once; a missed one is a line on stderr and a report field, while
    the exit code stays the accuracy budget's."""
    reached = nestc.compress(trained_mlp, tmp_path / "reached.onnx", "embedded",
                             NestConfig(max_epochs=2, target_params=10**9), TrainConfig(device="cpu", quiet=True),
                             log=lambda _line: None)
    assert reached.report["target_params"] == {"requested": 10**9, "reached": True}
    assert reached.report["stopped_by"] == "--target-params reached"
    assert [h["phase"] for h in reached.report["history"]] == ["start"], "nothing trained after the target"
    run = _cli("compress", str(trained_mlp), "--data", "embedded", "--max-epochs", "1", "--target-params", "10",
               "--quiet", "--device", "cpu", "-o", "missed.onnx", "--report", "missed.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "--target-params 10 not reached" in run.stderr and "Traceback" not in run.stderr
    missed = json.loads((tmp_path / "missed.json").read_text())
    assert missed["target_params"] == {"requested": 10, "reached": False}
    assert missed["stopped_by"] == "--max-epochs spent"


def test_compress_seed_grows_then_prunes(tmp_path: Path) -> None:
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.2, density=0.1)
    config = NestConfig(max_epochs=8, grow_epochs=1, grow_steps=2, retrain_epochs=1, neuron_growth=4)
    result = nestc.compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), limit=1000, log=lambda _line: None)
    phases = [h["phase"] for h in result.report["history"]]
    assert phases[0] == "grow" and "prune" in phases
    grow_steps = [h for h in result.report["history"] if h["phase"] == "grow"]
    assert max(h["widths"]["fc1"] for h in grow_steps) > grow_steps[0]["widths"]["fc1"], "neurons were grown"
    assert result.report["grew"]
    sess = runtime.session(onnx.load(str(tmp_path / "out.onnx")))
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    assert runtime.run(sess, [x])[0].shape == (5, 10)


def test_seed_for_colour_images_compresses_on_cifar_files(tmp_path: Path) -> None:
    """A LeNet-5 seed with ``--input-shape 3,32,32 --classes 100`` takes CIFAR-100's binary files (Fashion-MNIST
    images centred in 32x32 and given three equal planes); the default 1x28x28 seed is refused by name."""
    raw = load_dataset("embedded")
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for name, x, y in (("train.bin", raw.x_train[:500], raw.y_train[:500]), ("test.bin", raw.x_test[:200],
                                                                              raw.y_test[:200])):
        planes = np.zeros((len(x), 3, 32, 32), np.uint8)
        planes[:, :, 2:30, 2:30] = np.round(x * 255).astype(np.uint8)
        labels = np.stack([y // 2, y], 1).astype(np.uint8)  # coarse, fine
        (folder / name).write_bytes(np.concatenate([labels, planes.reshape(len(x), -1)], 1).tobytes())
    nestc.seed("lenet-5", tmp_path / "colour.onnx", width_ratio=0.25, classes=100, input_shape=(3, 32, 32))
    result = nestc.compress(tmp_path / "colour.onnx", tmp_path / "out.onnx", "cifar100",
                            NestConfig(max_epochs=1), TrainConfig(device="cpu", quiet=True), data_dir=tmp_path,
                            log=lambda _line: None)
    assert result.report["accuracy"]["after"] > 0.15, "one epoch on 500 images: above chance (0.1 on 10 labels)"
    x = fit_to_input(load_dataset("cifar100", data_dir=tmp_path), ["N", 3, 32, 32]).x_test[:5]
    assert runtime.run(runtime.session(onnx.load(str(tmp_path / "out.onnx"))), [x])[0].shape == (5, 100)
    nestc.seed("lenet-5", tmp_path / "grey.onnx")
    with pytest.raises(DataError, match=r"shape \(3, 32, 32\); .*grey.onnx input expects \[N, 1, 28, 28\]"):
        nestc.evaluate(tmp_path / "grey.onnx", "cifar100", data_dir=tmp_path)


def test_seed_result_keeps_the_budget_on_the_test_split(tmp_path: Path) -> None:
    """A seed's steps are judged on 100 held-out training images here: some clear the budget by luck.
    The written network must keep the budget on the test split too (against the grown network's test
    accuracy); a step only the held-out part accepts goes on pruning but is no result. Training seed 2
    is one where, without that rule, the written network scored 1.4 points under the grown network."""
    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.2, density=0.1)
    config = NestConfig(max_epochs=8, grow_epochs=1, grow_steps=2, retrain_epochs=1, neuron_growth=4,
                        validation="train")
    result = nestc.compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True, seed=2), limit=1000, log=lambda _line: None)
    report = result.report
    assert report["validation"] == "train" and result.met_budget
    assert report["accuracy"]["after"] >= report["reference_test_accuracy"] - 0.005
    results = [h["nonzero_params"] for h in report["history"]
               if h["accepted"] and h["phase"] == "prune" and "not a result" not in h["action"]]
    assert report["nonzero_params"]["after"] == min(results)


@pytest.mark.parametrize(("grow", "phase"), [("auto", "train"), ("off", "train"), ("on", "grow")])
def test_compress_trains_an_untrained_dense_model_before_judging_it(tmp_path: Path, grow: str, phase: str) -> None:
    """A dense, randomly initialised model scores chance: that is no accuracy to keep. It is trained
    first (grown only with ``on``: ``auto`` grows sparse seeds, and a dense model has no dormant
    connections to choose from), and the budget is judged against the trained network."""
    nestc.seed("lenet-300-100", tmp_path / "dense.onnx", width_ratio=0.2)
    config = NestConfig(max_epochs=6, grow=grow, grow_epochs=1, grow_steps=1, neuron_growth=4)
    lines: list[str] = []
    result = nestc.compress(tmp_path / "dense.onnx", tmp_path / "out.onnx", "embedded", config,
                            TrainConfig(device="cpu", quiet=True), limit=1000, log=lines.append)
    assert any("dense.onnx" in line and "untrained" in line for line in lines), "the user is told why"
    assert any("trained, not grown" in line for line in lines) == (grow == "auto"), "and why it does not grow"
    history = result.report["history"]
    assert history[0]["phase"] == phase and history[0]["action"] == "train seed"
    assert result.report["reference_val_accuracy"] > 0.3, "the reference is the trained network's accuracy"
    assert result.report["reference_test_accuracy"] > 0.3, "measured on the trained network, not the input"
    assert result.report["budget_val_accuracy"] == pytest.approx(result.report["reference_val_accuracy"] - 0.005)
    assert result.report["accuracy"]["after"] > 0.3  # chance: 0.1
    assert result.report["grew"] == (grow == "on")
    first = history[0]["widths"]
    grew_units = any(h["widths"][k] > first[k] for h in history for k in first)
    assert grew_units == (grow == "on")


@pytest.mark.parametrize(("name", "exporter", "keep_bn"), [("Residual", "legacy", True),
                                                        ("DepthwiseConcat", "dynamo", False)])
def test_compress_grows_and_prunes_residual_and_branching_graphs(zoo_export, tmp_path: Path, name: str,
                                                                 exporter: str, keep_bn: bool) -> None:
    """The whole flow on graphs that are not chains: residual sums with batch norm, a depthwise branch
    concatenated with a pointwise one. Unlabeled inputs make nestc distil from the original model."""
    exported = zoo_export(name, exporter, keep_bn=keep_bn)
    x = np.random.default_rng(0).standard_normal((600, *exported.module.INPUT)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x_train=x[:500], x_test=x[500:])
    config = NestConfig(grow="on", grow_steps=1, grow_epochs=1, feature_map_growth=2, max_epochs=6,
                        unit_prune_fraction=0.2, max_acc_drop=100)
    result = nestc.compress(exported.path, tmp_path / "out.onnx", str(tmp_path / "inputs.npz"), config,
                            TrainConfig(device="cpu", quiet=True, batch_size=50), log=lambda _line: None)
    history = result.report["history"]
    first = history[0]["widths"]
    assert any(h["widths"][k] > first[k] for h in history if h["phase"] == "grow" for k in first), "maps grew"
    assert any("units" in h["action"] for h in history if h["phase"] == "prune"), "whole units were pruned"
    kept = first
    for row in history:  # compaction shrinks widths only to runtime-friendly sizes (--round-to); an undo restores
        shrunk = [w for k, w in row["widths"].items() if w < kept.get(k, w)]
        if row["phase"] == "prune":
            assert all(w % config.round_to == 0 or w <= NARROW_WIDTH for w in shrunk), (kept, row["widths"])
        kept = row["widths"] if row["accepted"] else kept
    written = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(written)
    out = runtime.run(runtime.session(written), [x[:1]])[0]
    assert out.shape == (1, exported.module.fc.out_features)
    assert nestc.inspect(tmp_path / "out.onnx").nonzero_params == result.report["nonzero_params"]["after"]


def test_compress_refuses_to_overwrite_input(trained_mlp: Path) -> None:
    run = _cli("compress", str(trained_mlp), "-o", str(trained_mlp), "--quiet", cwd=trained_mlp.parent)
    assert run.returncode == 2
    assert "equals the input" in run.stderr and "Traceback" not in run.stderr


def test_the_report_says_what_ended_the_run(trained_mlp: Path, tmp_path: Path) -> None:
    """A spent time budget and a stalled step size end a run for different reasons: only the first could buy
    a smaller model with more of it, so the report and the log say which."""
    lines: list[str] = []
    timed = nestc.compress(trained_mlp, tmp_path / "timed.onnx", "embedded",
                           NestConfig(max_epochs=20, time_budget=1e-3), TrainConfig(device="cpu", quiet=True),
                           log=lines.append)
    assert timed.report["stopped_by"] == "--time-budget spent" and "stopped: --time-budget spent" in lines
    stalled = nestc.compress(trained_mlp, tmp_path / "stalled.onnx", "embedded",
                             NestConfig(max_epochs=30, prune_fraction=0.5, max_acc_drop=0.0, min_prune_fraction=0.4,
                                        grow_prune_cycles=0), TrainConfig(device="cpu", quiet=True),
                             log=lambda _line: None)
    assert stalled.report["stopped_by"].startswith("pruning stalled")
    assert max(h["epochs_used"] for h in stalled.report["history"]) < 30
