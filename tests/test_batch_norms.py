"""Batch normalisation inserted to train the convolutions an exporter folded it out of, and folded back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
import torch

import nestc
from nestc.api import load_network
from nestc.ir.emit import emit_model
from nestc.naming import INSERTED_BATCH_NORM
from nestc.passes.batch_norms import fold_batch_norms, insert_batch_norms
from nestc.schedule.runner import BATCH_NORM_GAIN
from nestc.stats import model_stats

ZOO_CASES = [("Residual", 5), ("DepthwiseConcat", None), ("LeNet5", 2)]


def _inputs(module: models.Zoo, count: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *module.INPUT)).astype(np.float32)


def _convs(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Conv" for node in model.graph.node)


def _disturb_batch_norms(net) -> None:
    """What training does to an inserted normalisation: scales, shifts and running statistics move."""
    generator = torch.Generator().manual_seed(3)
    for node in net.nodes:
        if node.name.endswith(INSERTED_BATCH_NORM):
            for slot, (low, high) in zip(range(1, 5), ((0.5, 1.5), (-0.3, 0.3), (-0.3, 0.3), (0.5, 2.0)),
                                         strict=True):
                value = net.tensor(node.inputs[slot])
                net.set_tensor(node.inputs[slot], low + (high - low) * torch.rand(value.shape, generator=generator))


@pytest.mark.parametrize(("name", "convs"), ZOO_CASES)
def test_inserted_normalisation_computes_what_the_file_did(zoo_export: Callable[..., models.Exported], name: str,
                                                          convs: int | None) -> None:
    """In inference mode every inserted BatchNormalization is the identity: onnxruntime gives the emitted
    training form the original file's outputs, and statistics count the network as the file."""
    exported = zoo_export(name)  # legacy exporter, eval mode: batch normalisation folded into the convolutions
    original = onnx.load(exported.path)
    x = _inputs(exported.module)
    net = load_network(exported.path)
    widened, inserted = insert_batch_norms(net, torch.from_numpy(x))
    assert inserted == (convs if convs is not None else _convs(original))
    assert sum(n.name.endswith(INSERTED_BATCH_NORM) for n in widened.nodes) == inserted
    models.assert_close(models.ort_run(emit_model(widened), x), models.ort_run(original, x))
    assert model_stats(widened) == model_stats(net)


@pytest.mark.parametrize(("name", "convs"), ZOO_CASES)
def test_folding_gives_back_the_input_graph_with_the_trained_function(zoo_export: Callable[..., models.Exported],
                                                                      name: str, convs: int | None) -> None:
    """After training moved the inserted scales, shifts and statistics, the folded file has the input's nodes
    and computes what the network with its normalisation computes (onnxruntime against the network)."""
    exported = zoo_export(name)
    original = onnx.load(exported.path)
    x = _inputs(exported.module, seed=1)
    widened, _ = insert_batch_norms(load_network(exported.path), torch.from_numpy(_inputs(exported.module)))
    _disturb_batch_norms(widened)
    folded = emit_model(fold_batch_norms(widened))
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in original.graph.node]
    assert {n.name for n in folded.graph.node} == {n.name for n in original.graph.node}
    models.assert_close(models.ort_run(folded, x), widened.run_numpy(x)[0], rtol=1e-4, atol=1e-5)


def test_connection_masks_survive_the_fold(zoo_export: Callable[..., models.Exported]) -> None:
    """A pruned connection stays pruned: folding scales a Conv's rows, it does not fill zeros."""
    exported = zoo_export("Residual")
    widened, _ = insert_batch_norms(load_network(exported.path), torch.from_numpy(_inputs(exported.module)))
    conv = next(n for n in widened.nodes if n.op_type == "Conv")
    weight = conv.inputs[1]
    mask = (torch.rand(widened.tensor(weight).shape, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    widened.set_mask(weight, mask)
    _disturb_batch_norms(widened)
    folded = fold_batch_norms(widened)
    assert torch.equal(folded.mask(weight), mask)
    assert torch.equal(folded.effective_weight(weight) != 0, mask.bool())


def test_convolutions_with_their_normalisation_get_none_inserted(zoo_export: Callable[..., models.Exported]) -> None:
    """A model that kept its BatchNormalization nodes is trained as it is."""
    exported = zoo_export("Residual", keep_bn=True)
    net = load_network(exported.path)
    same, inserted = insert_batch_norms(net, torch.from_numpy(_inputs(exported.module)))
    assert inserted == 0 and same is net


def test_bias_free_convolution_gets_the_folded_shift_as_its_bias(tmp_path: Path) -> None:
    """A Conv without a bias input gets one from the fold (the normalisation's shift), and computes the same."""
    x = np.random.default_rng(0).standard_normal((8, 1, 6, 6)).astype(np.float32)
    kernel = np.random.default_rng(1).standard_normal((4, 1, 3, 3)).astype(np.float32)
    weight = onnx.numpy_helper.from_array(kernel, "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 6, 6])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6])], [weight])
    path = tmp_path / "conv.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    widened, inserted = insert_batch_norms(load_network(path), torch.from_numpy(x))
    assert inserted == 1
    _disturb_batch_norms(widened)
    folded = emit_model(fold_batch_norms(widened))
    assert len(folded.graph.node[0].input) == 3
    models.assert_close(models.ort_run(folded, x), widened.run_numpy(x)[0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained_lenet5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow LeNet-5 (no normalisation) trained on the embedded data."""
    folder = tmp_path_factory.mktemp("lenet5")
    nestc.seed("lenet-5", folder / "seed.onnx", width_ratio=0.25)
    nestc.train(folder / "seed.onnx", folder / "trained.onnx", "embedded",
                nestc.TrainConfig(epochs=3, quiet=True, device="cpu"))
    return folder / "trained.onnx"


def test_compress_trains_with_normalisation_and_writes_the_input_graph(trained_lenet5: Path, tmp_path: Path) -> None:
    """End to end: the log says what was inserted, the file has the input's operators and no inserted node,
    and the history row of the written network counts what the file holds."""
    lines: list[str] = []
    result = nestc.compress(trained_lenet5, tmp_path / "out.onnx", "embedded",
                            nestc.NestConfig(max_epochs=2, batch_norm="on"),
                            nestc.TrainConfig(quiet=True, device="cpu"), report=tmp_path / "r.json",
                            log=lines.append)
    assert any(line.startswith("batch normalisation: 2 convolution(s)") for line in lines)
    written = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in onnx.load(trained_lenet5).graph.node]
    assert not any(INSERTED_BATCH_NORM in n.name for n in written.graph.node)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["batch_norms_inserted"] == 2
    row = report["history"][report["output_step"]]
    assert row["nonzero_params"] == report["nonzero_params"]["after"] == result.report["nonzero_params"]["after"]


@pytest.mark.parametrize("trained", [True, False])
def test_no_insertion_without_batch_norm_or_for_a_seed(trained_lenet5: Path, tmp_path: Path, trained: bool) -> None:
    """``batch_norm="off"`` trains a trained model's graph as it is; a seed (untrained) always is, even with
    ``on``: nothing was folded out of it."""
    model = trained_lenet5
    if not trained:
        model = tmp_path / "seed.onnx"
        nestc.seed("lenet-5", model, width_ratio=0.25)
    lines: list[str] = []
    config = nestc.NestConfig(max_epochs=1, batch_norm="off" if trained else "on")
    nestc.compress(model, tmp_path / "out.onnx", "embedded", config, nestc.TrainConfig(quiet=True, device="cpu"),
                   log=lines.append)
    assert lines and not any(line.startswith("batch normalisation") for line in lines)


def test_auto_trains_with_normalisation_only_when_the_check_gains(trained_lenet5: Path, tmp_path: Path) -> None:
    """``auto``: the learning-rate check fine-tunes the model as it is and with inserted normalisation, both are
    history rows, and the run trains with the normalisation exactly when it scored ``BATCH_NORM_GAIN`` points
    more; the report and the log say which."""
    lines: list[str] = []
    result = nestc.compress(trained_lenet5, tmp_path / "out.onnx", "embedded",
                            nestc.NestConfig(max_epochs=2, lr_check_epochs=0.5),
                            nestc.TrainConfig(quiet=True, device="cpu"), log=lines.append)
    history = result.report["history"]
    plain = next(r for r in history if r["action"].endswith("graph as it is"))
    normalised = next(r for r in history if r["action"].endswith("batch normalisation inserted"))
    chosen = normalised["val_accuracy"] >= plain["val_accuracy"] + BATCH_NORM_GAIN / 100
    assert (normalised["accepted"], plain["accepted"]) == (chosen, not chosen)
    assert result.report["batch_norms_inserted"] == (2 if chosen else 0)
    decision = [line for line in lines if line.startswith("batch normalisation: ") and "without:" in line]
    assert len(decision) == 1 and ("trained with it" in decision[0]) == chosen
    written = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in onnx.load(trained_lenet5).graph.node]


def test_auto_without_the_learning_rate_check_trains_the_graph_as_it_is(trained_lenet5: Path, tmp_path: Path) -> None:
    """With the check off there is nothing to compare: ``auto`` says so and inserts nothing."""
    lines: list[str] = []
    result = nestc.compress(trained_lenet5, tmp_path / "out.onnx", "embedded",
                            nestc.NestConfig(max_epochs=1, lr_check_epochs=0),
                            nestc.TrainConfig(quiet=True, device="cpu"), log=lines.append)
    assert result.report["batch_norms_inserted"] == 0
    assert any("no learning-rate check to compare with" in line for line in lines)


def test_scale_and_shift_after_an_inserted_normalisation_stay_trainable(tmp_path: Path) -> None:
    """tf2onnx writes the batch normalisation after a depthwise Conv as Mul + Add; with a BatchNormalization
    inserted between the Conv and them they are still the layer's per-unit scale and shift: trained, and
    counted as before."""
    rng = np.random.default_rng(2)
    constants = {"w": rng.standard_normal((4, 1, 3, 3)), "b": rng.standard_normal(4),
                 "s": 1 + 0.1 * rng.standard_normal((1, 4, 1, 1)), "t": rng.standard_normal((1, 4, 1, 1))}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         onnx.helper.make_node("Mul", ["c", "s"], ["m"], name="scale"),
         onnx.helper.make_node("Add", ["m", "t"], ["y"], name="shift")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 6, 6])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6])],
        [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in constants.items()])
    path = tmp_path / "conv.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    net = load_network(path)
    widened, inserted = insert_batch_norms(net, torch.from_numpy(rng.standard_normal((8, 1, 6, 6)).astype(np.float32)))
    assert inserted == 1
    assert widened.is_trainable("s") and widened.is_trainable("t")
    assert model_stats(widened) == model_stats(net)


@pytest.mark.parametrize(("name", "convs"), ZOO_CASES)
def test_training_starts_from_the_function_it_imported(zoo_export: Callable[..., models.Exported], name: str,
                                                      convs: int | None) -> None:
    """On the sample it was measured on, every inserted normalisation's batch statistics are its running ones:
    in training mode the network computes what it computes at inference, Convs of every output size alike
    (LeNet-5's Convs write different spatial sizes: counted with the first one's, the second's statistics
    were off by the ratio of their sizes)."""
    exported = zoo_export(name)
    x = torch.from_numpy(_inputs(exported.module, count=96))
    widened, _ = insert_batch_norms(load_network(exported.path), x)
    expected = widened.run_numpy(x.numpy())[0]
    widened.train(True)
    with torch.no_grad():
        trained_mode = widened(x)[0].numpy()
    models.assert_close(trained_mode, expected, rtol=1e-3, atol=1e-4)
