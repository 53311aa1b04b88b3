"""Smoke test of ``benchmarks/nest_table.py`` at a minuscule size, so the script cannot silently rot.

600 embedded training samples, 1 epoch each for dense training and compression, one onnxsim
sparsity: every method of the table runs end to end through the script's command line and the JSON
it writes is checked for its rows, columns and value ranges (not for any accuracy level).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

import nestc


@pytest.fixture(scope="module")
def nest_table():
    """The benchmark script, imported as a module."""
    return load_benchmark("nest_table")


@pytest.mark.slow
def test_nest_table_smoke(nest_table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = nest_table.main(["--models", "lenet-300-100", "--data", "embedded", "--device", "cpu", "--quick",
                            "--limit", "600", "--test-limit", "500", "--dense-epochs", "1", "--compress-epochs", "1",
                            "--sparsities", "0.9", "--latency-repeats", "2", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "lenet-300-100-debug.json").read_text())
    rows = {row["method"]: row for row in payload["rows"]}
    expected = {"dense", "pruning only (Han et al.)", "pruning only (nestc schedule)",
                "onnxsim magnitude s=0.9 + finetune", "onnxsim structured s=0.9 + finetune", "nestc (dense, drop 0.5)",
                "nestc (dense, drop 0.5, units 0.2)", "nestc (seed, drop 0.5)"}
    assert set(rows) == expected
    for name, row in rows.items():
        assert set(row) == set(nest_table.ROW_FIELDS), name
        if name.startswith("onnxsim") and row["error"]:  # an onnxsim failure is recorded, not raised
            continue
        assert row["error"] is None, (name, row["error"])
        assert isinstance(row["accuracy"], float) and 0.0 <= row["accuracy"] <= 1.0, name
        for key in ("params", "nonzero_params", "macs", "nonzero_macs", "file_bytes"):
            assert isinstance(row[key], int) and row[key] > 0, (name, key)
        assert row["nonzero_params"] <= row["params"], name
        for key in ("compression", "mac_reduction", "latency_b1_ms", "latency_b256_ms", "wall_s", "epochs"):
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (name, key)
    assert rows["dense"]["compression"] == 1.0
    for name in ("pruning only (Han et al.)", "pruning only (nestc schedule)", "nestc (dense, drop 0.5)",
                 "nestc (dense, drop 0.5, units 0.2)", "nestc (seed, drop 0.5)"):  # 1 + 1 epochs budget
        assert 0.0 < rows[name]["epochs"] <= 3.0, name  # (a step may overrun by its recovery epoch)
    assert code == (1 if any(row["error"] for row in rows.values()) else 0)
    assert payload["data"] == {"spec": "embedded", "train_samples": 600, "test_samples": 500, "compress_epochs": 1}
    assert {"cpu", "cores", "torch", "onnxruntime"} <= set(payload["machine"])
    assert {t["target"] for t in payload["targets"]} == {">= 30x fewer params",
                                                          ">= 3x fewer params than pruning only, Han et al.",
                                                          ">= 3x fewer params than pruning only, nestc schedule"}
    assert all(isinstance(t["met"], bool) for t in payload["targets"])
    printed = capsys.readouterr().out
    assert "| method | test acc |" in printed and "Targets:" in printed


def test_failed_method_becomes_a_row(nest_table) -> None:
    """A method that raises is recorded in its row (and in the table), and targets report it missed."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(settings=SimpleNamespace(model="lenet-5"), seed=0, log=lambda _line: None)

    def broken():
        raise ValueError("unsupported node")

    row = nest_table.guarded("onnxsim structured s=0.5 + finetune", ctx, broken)
    assert row.error == "ValueError: unsupported node" and row.accuracy is None
    dense = nest_table.Row("dense", accuracy=0.9, params=100, nonzero_params=100, macs=1000, nonzero_macs=1000,
                           latency_b256_ms=1.0)
    rows = [dense, row]
    nest_table.fill_ratios(rows)
    assert "failed: ValueError: unsupported node" in nest_table.format_table([nest_table.asdict(r) for r in rows])
    targets = nest_table.check_targets("lenet-5", rows)
    assert len(targets) == 5 and not any(t["met"] for t in targets)


def test_replicated_rows_report_the_median_seed_and_list_every_run(nest_table) -> None:
    """``--seeds``: each seed runs with its own training seed; the row is the median run by non-zeros,
    and a failed seed is listed but not counted."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(settings=SimpleNamespace(model="lenet-5", seeds=(0, 1, 2, 3)), seed=0,
                          log=lambda _line: None)
    results = {0: 900, 1: 300, 3: 600}

    def work():
        if ctx.seed not in results:
            raise RuntimeError("diverged")
        return nest_table.Row("x", accuracy=0.9, nonzero_params=results[ctx.seed], seed=ctx.seed)

    row = nest_table.replicated("nestc (dense, drop 0.5)", ctx, work)
    assert (row.method, row.seed, row.nonzero_params) == ("nestc (dense, drop 0.5)", 3, 600)
    assert row.notes.startswith("median of 3 seeds (seed 0: 900 at 90.00%, seed 1: 300 at 90.00%, "
                                "seed 2: failed (RuntimeError: diverged), seed 3: 600 at 90.00%)")
    assert ctx.seed == 0, "later methods train with seed 0 again"


def test_han_rounds_prune_the_same_share_of_every_layer(nest_table, tmp_path: Path) -> None:
    """The Han et al. baseline takes ``fraction`` of each layer's active weights, smallest first."""
    import torch
    from han_pruning import prune_each_layer

    import nestc
    from nestc.api import load_network
    from nestc.passes.base import ensure_masks, layers

    nestc.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.25)
    net = load_network(tmp_path / "seed.onnx")
    ensure_masks(net)
    before = {layer.weight: net.tensor(layer.weight).detach().abs().clone() for layer in layers(net)}
    prune_each_layer(net, 0.2)
    prune_each_layer(net, 0.2)
    for layer in layers(net):
        weight, mask = before[layer.weight], net.mask(layer.weight)
        first = weight.numel() - int(0.2 * weight.numel())
        assert int(mask.sum()) == first - int(0.2 * first), layer.weight
        assert float(weight[mask == 0].max()) <= float(weight[mask > 0].min()), "smallest magnitudes go first"
        assert torch.all(net.tensor(layer.weight)[mask == 0] == 0)


@pytest.mark.slow
def test_exporters_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Six exporter styles (channels-last tf2onnx, a 32x32 legacy LeNet-5 on 28x28 images, a LeNet-5 trained on raw
    0..255 pixels, one that takes uint8 pixels, opset-9 Gemm on scikit-learn's digits, CNTK's IR 3 MNIST) made,
    trained and compressed through the script; each row is complete."""
    exporters = load_benchmark("exporters")
    out = tmp_path / "exporters.json"
    models = ["tf2onnx-lenet5", "torch-lenet5-classic", "torch-raw-lenet5", "torch-uint8-lenet5", "opset9-digits-mlp",
              "cntk-mnist"]
    code = exporters.main(["--models", ",".join(models),
                           "--data", "embedded", "--limit", "600", "--train-epochs", "1", "--max-epochs", "1", "--han",
                           "--out", str(out)])
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert code == 0 and set(rows) == set(models)
    for name, row in rows.items():
        assert "error" not in row, (name, row.get("error"))
        assert 0.0 <= row["accuracy_after"] <= 1.0 and 0 < row["nonzero_after"] <= row["nonzero_before"], name
        assert row["exit_code"] in (0, 3) and row["learning_rate"] > 0, name
        assert 0 < row["han_nonzero"] <= row["nonzero_before"] and 0.0 <= row["han_accuracy"] <= 1.0, name
        assert row["han_rounds"] == 1, "one epoch is one Han round"
    assert rows["torch-lenet5-classic"]["input_fit"] == "28x28 -> 32x32 (pad)"
    assert rows["tf2onnx-lenet5"]["input_fit"] is None and rows["opset9-digits-mlp"]["data"] == "digits"
    assert rows["torch-raw-lenet5"]["input_std"] == [pytest.approx(1 / 255)], "fed the raw pixels it was trained on"
    assert rows["tf2onnx-lenet5"]["input_std"] != rows["torch-raw-lenet5"]["input_std"]
    assert rows["torch-uint8-lenet5"]["input_std"] == [pytest.approx(1 / 255)], "fed its uint8 pixels"
    printed = capsys.readouterr().out
    assert "| tf2onnx-lenet5 |" in printed and "nestc smaller" in printed


def test_exporters_compresses_files_exported_elsewhere_as_they_are(tmp_path: Path) -> None:
    """``--files`` rows: real tf2onnx exports, named by their producer, compressed without retraining first."""
    exporters = load_benchmark("exporters")
    fixtures = Path(__file__).parent / "fixtures" / "tf2onnx"
    out = tmp_path / "files.json"
    files = [str(fixtures / "mlp.onnx"), str(fixtures / "rescale_uint8.onnx")]
    code = exporters.main(["--models", "none", "--files", *files, "--data", "embedded", "--limit", "600",
                           "--max-epochs", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert code == 0 and [row["model"] for row in rows] == ["tf2onnx:mlp", "tf2onnx:rescale_uint8"]
    for row in rows:
        assert "error" not in row and row["exit_code"] in (0, 3), row
        assert row["nonzero_before"] == nestc.inspect(fixtures / f"{row['model'].split(':')[1]}.onnx").nonzero_params
    assert rows[1]["input_std"] == [pytest.approx(1 / 255)], "a uint8 input is fed its pixels"


@pytest.mark.slow
def test_budget_sweep_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both methods run at every budget and seed from one dense model; Han et al. prunes in rounds (at most
    40 whatever the budget, each retrained budget / 40 epochs), and the ratio is what the rows say."""
    sweep = load_benchmark("budget_sweep")
    code = sweep.main(["--data", "embedded", "--limit", "600", "--dense-epochs", "1", "--budgets", "1,2",
                       "--seeds", "0", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    payload = json.loads((tmp_path / "budget-sweep-lenet-300-100-embedded.json").read_text())
    assert [(r["budget"], r["seed"]) for r in payload["runs"]] == [(1.0, 0), (2.0, 0)]
    for run in payload["runs"]:
        curve = [nonzero for nonzero, _accuracy in run["han"]["curve"]]
        assert 0 < len(curve) <= sweep.HAN_ROUNDS and curve == sorted(curve, reverse=True)
        for method in ("han", "nestc"):
            assert 0 < run[method]["nonzero"] <= 266_610 and 0.0 <= run[method]["accuracy"] <= 1.0
        assert run["ratio"] == pytest.approx(run["han"]["nonzero"] / run["nestc"]["nonzero"])
    printed = capsys.readouterr().out
    assert "| budget (epochs) |" in printed and "| budget | seed |" in printed


def test_digits_at_28x28_are_a_stratified_split_in_the_npz_layout(nest_table, tmp_path: Path) -> None:
    """``--data sklearn-digits``: scikit-learn's digits resized to 28x28 bytes, a quarter of every class held out;
    the table's budget stays unset, for compress to choose for those 1,347 training images."""
    with np.load(nest_table.digits_28(tmp_path)) as data:
        assert data["x_train"].shape == (1347, 28, 28) and data["x_test"].shape == (450, 28, 28)
        assert data["x_train"].dtype == np.uint8 and data["x_train"].max() == 255
        share = np.bincount(data["y_test"]) / (np.bincount(data["y_test"]) + np.bincount(data["y_train"]))
        assert np.allclose(share, 0.25, atol=0.01), share
    settings = nest_table.settings_for("lenet-300-100", data=nest_table.SKLEARN_DIGITS)
    assert settings.compress_epochs is None
    assert nest_table.result_name(nest_table.asdict(settings)) == "lenet-300-100-sklearn-digits.json"
    limited = nest_table.asdict(nest_table.replace(settings, limit=500))
    assert nest_table.result_name(limited) == "lenet-300-100-debug.json"
