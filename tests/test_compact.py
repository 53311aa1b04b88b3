"""``nestc compact`` on exported models with dead units planted in torch before export.

Every case checks the three things compaction promises: the written model passes ``onnx.checker``,
onnxruntime gives the input model's outputs (at two batch sizes), and the parameter count drops by
exactly what the planted units own, a number each test also writes out by hand per architecture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from nestc import api
from nestc.stats import model_stats

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _compact(exp, tmp_path, name: str = "out.onnx", **options) -> tuple[api.CompactReport, onnx.ModelProto]:
    """Compact ``exp`` and run every generic check; returns the report and the written model."""
    out = tmp_path / name
    report = api.compact(exp.path, out, **options)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=not model.graph.sparse_initializer)
    for batch in (1, 6):
        x = exp.module.sample(batch, seed=10 + batch).numpy()
        reference = models.ort_run(exp.path, x, static_batch=exp.static_batch)
        models.assert_close(models.ort_run(out, x), reference)
    stats = model_stats(api.load_network(out))
    assert stats.params == report.after.params
    return report, model


def _drop(report: api.CompactReport) -> int:
    return report.before.params - report.after.params


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _weight_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


# ----------------------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_mlp_removes_zero_fanin_and_zero_fanout_neurons(zoo_export, tmp_path, exporter: str) -> None:
    exp = zoo_export("MLP", exporter, plants=models.PLANTS["MLP"])
    # fc1 units: 784 weights + 1 bias + 100 fc2 columns each; fc2 unit 5: its row (298 columns
    # left after fc1 lost two) + bias + 10 fc3 weights.
    assert exp.expected_drop == 2 * (784 + 1 + 100) + (298 + 1 + 10) == 2079
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 2079
    shapes = sorted(s for s in _weight_shapes(model).values() if len(s) == 2)
    assert shapes == sorted([(298, 784), (99, 298), (10, 99)])


def test_constant_neuron_is_folded_into_next_bias(zoo_export, tmp_path) -> None:
    """Zero fan-in with bias 0.5: the neuron outputs relu(0.5) for every input; fc2's bias absorbs it."""
    exp = zoo_export("MLP", "legacy", plants=(("fc1", (3, 7, 200), "fanin", 0.5),))
    assert exp.expected_drop == 3 * (784 + 1 + 100)
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 3 * 885
    original = _init(onnx.load(exp.path), "fc2.bias")
    fc2 = exp.module.fc2.weight.detach().numpy()
    np.testing.assert_allclose(_init(model, "fc2.bias"), original + 0.5 * fc2[:, [3, 7, 200]].sum(1), rtol=1e-5,
                               atol=1e-6)


class ActivationMLP(models.Zoo):
    INPUT = (12,)
    SPACES = {"fc1": [models.Ref("fc1.weight", 0), models.Ref("fc1.bias", 0),  # noqa: RUF012
                      models.Ref("fc2.weight", 1, role="consumer")]}

    def __init__(self, activation: torch.nn.Module) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(12, 9), activation, torch.nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# The legacy exporter at opset 13 writes GELU as 0.5 x (1 + Erf(x / sqrt 2)): the neuron's space runs
# through Div, Erf, Add and two Muls; Softsign is x / (1 + Abs(x)).
@pytest.mark.parametrize(("activation", "op"), [(torch.nn.Tanh(), "Tanh"), (torch.nn.GELU(), "Erf"),
                                                (torch.nn.Softplus(), "Softplus"), (torch.nn.SELU(), "Selu"),
                                                (torch.nn.Softsign(), "Abs")], ids=lambda v: str(v))
def test_constant_neuron_without_relu_is_folded(tmp_path, activation: torch.nn.Module, op: str) -> None:
    """A constant that is not zero after the activation (tanh(-0.3), GELU(-0.3), ...) still folds exactly."""
    torch.manual_seed(0)
    module = ActivationMLP(activation).eval()
    assert models.plant_dead(module, "fc1", [0, 4], "fanin", bias=-0.3) == 2 * (12 + 1 + 4)
    path = models.export(module, tmp_path / "act.onnx", "legacy", opset=13)
    assert op in {n.op_type for n in onnx.load(path).graph.node}
    exp = models.Exported(module, path)
    report, _ = _compact(exp, tmp_path)
    assert _drop(report) == 34


# ------------------------------------------------------------------------------- conv + flatten
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_lenet_channels_removed_through_flatten(zoo_export, tmp_path, exporter: str) -> None:
    plants = (("conv1", (2,), "fanin"), ("conv2", (4, 9), "fanin"), ("fc1", (10,), "fanout"))
    exp = zoo_export("LeNet5", exporter, plants=plants)
    assert plants == models.PLANTS["LeNet5"]
    conv1 = 25 + 1 + 16 * 25                     # filter, bias, conv2's input slice
    conv2 = 5 * 25 + 1 + 25 * 120                # filter over 5 remaining inputs, bias, 25 fc1 columns
    fc1 = 350 + 1 + 84                           # row over 350 remaining columns, bias, fc2 column
    assert exp.expected_drop == conv1 + 2 * conv2 + fc1 == 7113
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 7113
    shapes = _weight_shapes(model)
    assert (119, 350) in shapes.values() and (14, 5, 5, 5) in shapes.values()
    targets = [_init(model, n.input[1]).tolist() for n in model.graph.node if n.op_type == "Reshape"]
    assert all(t in ([-1, 350], [0, -1]) for t in targets)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_view_reshape_target_follows_removed_channels(zoo_export, tmp_path, exporter: str) -> None:
    """``x.view(x.size(0), -1)``: legacy computes ``[N, -1]`` from Shape/Gather/Concat, dynamo writes
    ``[1, -1]`` with ``allowzero=1``; both become constants with a free batch that compaction keeps right."""
    exp = zoo_export("ViewNet", exporter, plants=models.PLANTS["ViewNet"])
    assert exp.expected_drop == 2 * (27 + 1 + 36 * 32)
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 2360
    assert _weight_shapes(model)["fc1.weight"] == (32, 6 * 36)
    targets = [_init(model, n.input[1]).tolist() for n in model.graph.node if n.op_type == "Reshape"]
    assert targets and all(t in ([-1, 216], [0, -1]) for t in targets)


# --------------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_bn_net_channel_removal(zoo_export, tmp_path, train: bool) -> None:
    """BN kept (TrainingMode.PRESERVE): inference BN, and ``training_mode=1`` BN when exported in train mode."""
    exp = zoo_export("ConvBN", "legacy", keep_bn=True, train=train, plants=models.PLANTS["ConvBN"])
    c1 = 27 + 2 + 16 * 9                          # conv1 filter, BN scale+shift, conv2 input slice
    c2 = 7 * 9 + 2 + 10                           # conv2 filter over 7 inputs, BN, fc column
    assert exp.expected_drop == c1 + c2 == 248
    bn_nodes = [n for n in onnx.load(exp.path).graph.node if n.op_type == "BatchNormalization"]
    assert len(bn_nodes) == 2
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 248
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 2


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("conv", "space", "unit", "params"),
                         [("conv1", "c1", 5, 0), ("conv2", "c2", 3, 8 * 9 + 2 + 10)],
                         ids=["padded-reader", "linear-reader"])
def test_bn_channel_with_zero_filter_only(tmp_path, train: bool, conv: str, space: str, unit: int,
                                          params: int) -> None:
    """A zero filter with non-zero BN scale/shift: the channel is relu(shift - scale*mean/std) with
    inference BN, relu(shift) with ``training_mode=1`` BN (onnxruntime normalises with the batch's
    statistics). conv2's constant goes into fc's bias, where using the wrong one of the two values
    would show; conv1's is read by a padded 3x3 conv, whose border would differ: it must stay."""
    module = models.build("ConvBN")
    bn = getattr(module, conv.replace("conv", "bn"))
    with torch.no_grad():
        getattr(module, conv).weight[unit].zero_()
        bn.bias[unit], bn.running_mean[unit], bn.weight[unit] = 0.3, 0.2, 0.5  # 0.3, or 0.3 - 0.5 * 0.2 / std
    if train:
        module.train()
    path = models.export(module, tmp_path / "bn.onnx", "legacy", keep_bn=True)
    report, _ = _compact(models.Exported(module.eval(), path), tmp_path)
    assert _drop(report) == params
    if params:
        assert models.removal_count(module, {space: [unit]}) == params


class PointwiseBN(models.Zoo):
    """conv3x3-BN-ReLU, then a bias-free 1x1 conv-BN-ReLU: a constant channel of the first reaches the
    1x1 conv unchanged at every position, and the only place for its effect is bn2's running mean."""

    INPUT = (3, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 6, 1, bias=False), torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_constant_channel_folds_into_next_bn_running_mean(tmp_path, train: bool) -> None:
    torch.manual_seed(0)
    module = PointwiseBN().eval()
    with torch.no_grad():
        module.bn2.running_mean.uniform_(-0.2, 0.2)
        module.conv1.weight[4].zero_()
        module.bn1.bias[4] = 0.4
    if train:
        module.train()
    path = models.export(module, tmp_path / "pointwise.onnx", "legacy", keep_bn=True)
    report, model = _compact(models.Exported(module.eval(), path), tmp_path)
    assert _drop(report) == 27 + 2 + 6
    mean = _init(model, "bn2.running_mean")
    assert not np.allclose(mean, module.bn2.running_mean.numpy())  # the constant's effect moved here


def test_bn_channel_gated_by_zero_scale_and_shift(tmp_path) -> None:
    """Network-slimming style: only BN's scale and shift are zero, the conv filter is untouched."""
    module = models.build("ConvBN")
    with torch.no_grad():
        for unit in (1, 6):
            module.bn1.weight[unit] = 0.0
            module.bn1.bias[unit] = 0.0
    path = models.export(module, tmp_path / "slim.onnx", "legacy", keep_bn=True)
    exp = models.Exported(module, path)
    report, _ = _compact(exp, tmp_path)
    assert _drop(report) == 2 * (27 + 2 + 16 * 9)


# ---------------------------------------------------------------------------------- residual
@pytest.mark.parametrize(("exporter", "keep_bn"), [("legacy", True), ("dynamo", False)])
def test_residual_channel_dead_in_every_branch_is_removed(zoo_export, tmp_path, exporter: str,
                                                          keep_bn: bool) -> None:
    exp = zoo_export("Residual", exporter, keep_bn=keep_bn, plants=models.PLANTS["Residual"])
    # trunk unit: stem filter 27 + BN 2; b1_conv2, b2_conv2 filters 72 + BN 2 each; b1_conv1,
    # b2_conv1 input slices 72 each; fc column 10. b1 unit: b1_conv1 filter 72 + BN 2, b1_conv2
    # input slice 72. The trunk and b1 units share 9 weights in b1_conv1 and 9 in b1_conv2.
    trunk = 27 + 2 + 2 * (72 + 2) + 2 * 72 + 10
    block = 72 + 2 + 72
    unfused = trunk + 2 * block - 2 * 2 * 9
    assert models.removal_count(exp.module, {"trunk": [1], "b1": [2, 4]}) == unfused == 587
    # a folded export keeps one bias entry per BN channel instead of scale and shift
    assert exp.expected_drop == (unfused if keep_bn else unfused - 3 - 2)
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == exp.expected_drop
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 2


def test_residual_with_fresh_shared_bn_parameters(zoo_export, tmp_path) -> None:
    """Untrained BNs: the legacy exporter shares their equal scales/shifts through Identity nodes."""
    exp = zoo_export("Residual", "legacy", keep_bn=True, fresh_bn=True, plants=(("trunk", (5,), "fanin"),))
    assert exp.expected_drop == 27 + 2 + 2 * (72 + 2) + 2 * 72 + 10
    report, _ = _compact(exp, tmp_path)
    assert _drop(report) == exp.expected_drop


def test_residual_channel_dead_in_one_branch_only_is_kept(zoo_export, tmp_path) -> None:
    """Stem channel 1 is zero, but both blocks still write it through their skip Adds: nothing in the
    trunk space may go. Likewise a column zero in one reader (b1_conv1) but not the others."""
    module = models.build("Residual")
    with torch.no_grad():
        module.stem.weight[1].zero_()
        module.stem_bn.weight[1] = 0.0
        module.stem_bn.bias[1] = 0.0
        module.b1_conv1.weight[:, 3].zero_()
    path = models.export(module, tmp_path / "one_branch.onnx", "legacy", keep_bn=True)
    exp = models.Exported(module, path)
    report, _ = _compact(exp, tmp_path)
    assert _drop(report) == 0
    assert not report.result.modified


# ------------------------------------------------------------------------- depthwise + concat
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_depthwise_and_concat_segments(zoo_export, tmp_path, exporter: str) -> None:
    exp = zoo_export("DepthwiseConcat", exporter, plants=models.PLANTS["DepthwiseConcat"])
    stem = 27 + 1 + 9 + 1 + 6 + 10              # stem filter+bias, depthwise filter+bias, branch_a and pw columns
    a = 11 + 1 + 16                              # branch_a row over 11 stem channels, bias, merge column
    b = 2 * (11 + 1 + 16)                        # pw rows, biases, merge columns (shifted by branch A's 6)
    assert exp.expected_drop == stem + a + b == 138
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 138
    depthwise = [n for n in model.graph.node if n.op_type == "Conv" and
                 any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 1
    assert next(a.i for a in depthwise[0].attribute if a.name == "group") == 11
    assert _weight_shapes(model)["merge.weight"] == (16, 5 + 8, 1, 1)


class Separable(models.Zoo):
    """conv-ReLU-depthwise-ReLU-pointwise: nothing but the depthwise filter reads the first conv."""

    INPUT = (3, 6, 6)

    def __init__(self, activation: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.conv, self.dw = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.act = activation or torch.nn.ReLU()
        self.pw, self.fc = torch.nn.Conv2d(6, 5, 1), torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.pw(torch.relu(self.dw(self.act(self.conv(x))))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.Softplus, torch.nn.SELU, torch.nn.CELU],
                         ids=["relu", "softplus", "selu", "celu"])
def test_zero_depthwise_filter_silences_its_channel(tmp_path, activation: type[torch.nn.Module]) -> None:
    """The depthwise filter of channel 2 is zero (its bias is not): whatever the first conv computes and
    whichever finite activation follows it, the channel leaves the filter as relu(bias), which the
    pointwise conv's bias absorbs."""
    torch.manual_seed(0)
    module = Separable(activation()).eval()
    with torch.no_grad():
        module.dw.weight[2].zero_()
        module.dw.bias[2] = 0.3
    path = models.export(module, tmp_path / "separable.onnx", "legacy")
    report, model = _compact(models.Exported(module, path), tmp_path)
    assert _drop(report) == (27 + 1) + (9 + 1) + 5
    dw = next(n for n in model.graph.node if any(a.name == "group" and a.i > 1 for a in n.attribute))
    assert next(a.i for a in dw.attribute if a.name == "group") == 5


class ImageInput(models.Zoo):
    """Only the sampler: inputs for a hand-written N x 3 x 6 x 6 graph."""

    INPUT = (3, 6, 6)


def _conv_pair_model(tmp_path, middle: list[onnx.NodeProto], constants: dict[str, np.ndarray],
                     opset: int = 17) -> models.Exported:
    """x -> conv1 (8 maps; units 1 and 4 zero, bias 0) -> ``middle`` ("c1" to "m") -> conv2 (6 maps, 3x3) -> ReLU
    -> global average -> Gemm (3 outputs; conv2 unit 2 unread). Nodes read ``constants`` by name."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w1[[1, 4]], b1[[1, 4]] = 0.0, 0.0
    w2, b2 = rng.standard_normal((6, 8, 3, 3)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    fc = rng.standard_normal((6, 3)).astype(np.float32)
    fc[2] = 0.0
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        *middle,
        onnx.helper.make_node("Conv", ["m", "w2", "b2"], ["c2"]),  # unpadded: any constant folds into b2
        onnx.helper.make_node("Relu", ["c2"], ["r2"]),
        onnx.helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        onnx.helper.make_node("Flatten", ["g"], ["f"]),
        onnx.helper.make_node("Gemm", ["f", "fc"], ["y"]),
    ]
    return _image_model(tmp_path, "conv_pair", nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "fc": fc, **constants},
                        opset)


def _image_model(tmp_path, name: str, nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray],
                 opset: int = 17) -> models.Exported:
    """``nodes`` from ``x`` [N, 3, 6, 6] to ``y`` [N, 3], reading ``constants`` by name, saved as ``name``.onnx."""
    inits = [numpy_helper.from_array(v, k) for k, v in constants.items()]
    graph = onnx.helper.make_graph(
        nodes, name, [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 6, 6])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)]), str(path))
    return models.Exported(ImageInput(), str(path))


@pytest.mark.parametrize("op", ["LRN", "Softsign"])
def test_lrn_freezes_the_channels_it_mixes(tmp_path, op: str) -> None:
    """LRN divides each channel by its neighbours' energy: conv1's constant-zero units 1 and 4 must stay
    (they sit in other channels' windows), while conv2's unread unit 2 still goes. A point-wise op in
    the same place (Softsign: 0 stays 0) lets both go."""
    attrs = {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.0} if op == "LRN" else {}
    exp = _conv_pair_model(tmp_path, [onnx.helper.make_node(op, ["c1"], ["m"], **attrs)], {})
    report, model = _compact(exp, tmp_path)
    conv2_unit = 8 * 9 + 1 + 3
    conv1_units = 2 * (27 + 1 + 5 * 9)  # their filters, biases and conv2 columns (conv2 unit 2 is gone too)
    assert _drop(report) == conv2_unit + (0 if op == "LRN" else conv1_units)
    shapes = _weight_shapes(model)
    assert shapes["w1"] == ((8 if op == "LRN" else 6), 3, 3, 3) and shapes["fc"] == (5, 3)


def test_new_channel_rules_resize_their_constants(tmp_path) -> None:
    """conv1's units 1 and 4 (constant zero) go through InstanceNormalization (per-channel scale and
    shift), Softplus, Pow with a per-channel exponent, CastLike to double and back, Expand to a shape that
    names the channel count, and Max with a per-channel floor. Each per-channel tensor and the Expand
    target lose the two units; onnxruntime computes the same before and after."""
    rng = np.random.default_rng(1)
    constants = {
        "s": rng.uniform(0.5, 1.5, 8).astype(np.float32), "t": rng.standard_normal(8).astype(np.float32),
        "e": rng.uniform(0.5, 2.0, (1, 8, 1, 1)).astype(np.float32), "like64": np.zeros((), np.float64),
        "like32": np.zeros(1, np.float32), "target": np.array([1, 8, 6, 6], np.int64),
        "floor": rng.uniform(0.0, 1.0, (8, 1, 1)),
    }
    middle = [
        onnx.helper.make_node("InstanceNormalization", ["c1", "s", "t"], ["n"], epsilon=1e-3),
        onnx.helper.make_node("Softplus", ["n"], ["sp"]),
        onnx.helper.make_node("Pow", ["sp", "e"], ["p"]),
        onnx.helper.make_node("CastLike", ["p", "like64"], ["d"]),
        onnx.helper.make_node("Expand", ["d", "target"], ["ex"]),
        onnx.helper.make_node("Max", ["ex", "floor"], ["mx"]),
        onnx.helper.make_node("CastLike", ["mx", "like32"], ["m"]),
    ]
    # conv1's units are constant at conv2's input, but an instance-normalised constant is the shift
    # t[c] and Softplus/Pow/Max keep it constant: compaction folds it into conv2's bias.
    report, model = _compact(_conv_pair_model(tmp_path, middle, constants), tmp_path)
    assert report.result.modified
    assert {k: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer
            if (k := t.name) in ("w1", "s", "t", "e", "floor", "w2")} == {
        "w1": (6, 3, 3, 3), "s": (6,), "t": (6,), "e": (1, 6, 1, 1), "floor": (6, 1, 1), "w2": (5, 6, 3, 3)}
    assert _init(model, "target").tolist() == [1, 6, 6, 6]


def _resize_model(tmp_path, case: str) -> models.Exported:
    """conv1's maps doubled in size by a Resize between the convolutions, as ``case`` spells it (see the test);
    with the ONNX opset the spelling needs."""
    helper = onnx.helper
    if case == "scales-linear":
        constants = {"scales": np.array([1, 1, 2, 2], np.float32)}
        middle = [helper.make_node("Resize", ["c1", "", "scales"], ["m"], mode="linear")]
    elif case == "axes-sizes-cubic":
        constants = {"sizes": np.array([8, 12, 12], np.int64)}
        middle = [helper.make_node("Resize", ["c1", "", "", "sizes"], ["m"], mode="cubic", axes=[1, 2, 3])]
    elif case == "batch-sizes-nearest":
        constants = {"sizes": np.array([1, 8, 12, 12], np.int64)}
        middle = [helper.make_node("Resize", ["c1", "", "", "sizes"], ["m"], mode="nearest")]
    elif case == "run-time-sizes":  # the batch and channels of conv1's output, then 12 x 12, as the legacy
        constants = {"zero": np.array([0], np.int64), "two": np.array([2], np.int64),  # exporter builds them
                     "hw": np.array([12, 12], np.int64)}
        middle = [helper.make_node("Shape", ["c1"], ["shape"]),
                  helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                  helper.make_node("Resize", ["c1", "", "", "sizes"], ["m"], mode="linear")]
    else:  # run-time sizes of another making: conv1's shape times [1, 1, 2, 2]
        constants = {"twice": np.array([1, 1, 2, 2], np.int64)}
        middle = [helper.make_node("Shape", ["c1"], ["shape"]),
                  helper.make_node("Mul", ["shape", "twice"], ["sizes"]),
                  helper.make_node("Resize", ["c1", "", "", "sizes"], ["m"], mode="linear")]
    exp = _conv_pair_model(tmp_path, middle, constants, opset=19 if case == "axes-sizes-cubic" else 17)
    return models.Exported(exp.module, exp.path, static_batch=case == "batch-sizes-nearest")


@pytest.mark.parametrize("case", ["scales-linear", "axes-sizes-cubic", "batch-sizes-nearest", "run-time-sizes",
                                  "computed-sizes"])
def test_resize_passes_channels_through_and_follows_them_in_its_sizes(tmp_path, case: str) -> None:
    """Resize interpolates within each axis, so conv1's constant-zero units 1 and 4 stay zero through it and go,
    and constant sizes lose them (``[8, 12, 12]`` on axes 1-3 becomes ``[6, 12, 12]``). Sizes that name the batch
    (torch's dynamo exporter writes ``[1, C, H, W]``) would resize every batch to 1: they become scales, and the
    file runs at batch 6. Sizes computed at run time from the input's own batch and channels (the legacy
    exporter's) follow the removal by themselves; sizes computed any other way freeze the channels they pass,
    and only conv2's unit 2 goes."""
    report, model = _compact(_resize_model(tmp_path, case), tmp_path)
    conv2_unit = 8 * 9 + 1 + 3
    conv1_units = 2 * (27 + 1 + 5 * 9)
    assert _drop(report) == conv2_unit + (0 if case == "computed-sizes" else conv1_units)
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    if case == "axes-sizes-cubic":
        assert _init(model, resize.input[3]).tolist() == [6, 12, 12]
    if case == "batch-sizes-nearest":
        assert resize.input[3:] == [] and _init(model, resize.input[2]).tolist() == [1, 1, 2, 2]


def test_a_bias_computed_at_run_time_freezes_its_units(tmp_path) -> None:
    """conv1's bias is ``b1 * scale``, computed when the graph runs, so its dead units 1 and 4 have a tensor
    compaction cannot resize: they stay, while conv2's unread unit 2 goes. The channel analysis looked the
    bias up among the initializers and stopped with a KeyError."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w1[[1, 4]], b1[[1, 4]] = 0.0, 0.0
    fc = rng.standard_normal((6, 3)).astype(np.float32)
    fc[2] = 0.0
    nodes = [onnx.helper.make_node("Mul", ["b1", "scale"], ["bias1"]),
             onnx.helper.make_node("Conv", ["x", "w1", "bias1"], ["c1"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c1"], ["r1"]),
             onnx.helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             onnx.helper.make_node("Relu", ["c2"], ["r2"]),
             onnx.helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             onnx.helper.make_node("Flatten", ["g"], ["f"]),
             onnx.helper.make_node("Gemm", ["f", "fc"], ["y"])]
    exp = _image_model(tmp_path, "run_time_bias", nodes, {
        "w1": w1, "b1": b1, "scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "w2": rng.standard_normal((6, 8, 3, 3)).astype(np.float32), "b2": rng.standard_normal(6).astype(np.float32),
        "fc": fc})
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 8 * 9 + 1 + 3
    assert _weight_shapes(model)["w1"] == (8, 3, 3, 3)


def test_a_zero_bias_built_from_the_weight_shape_is_a_constant(tmp_path) -> None:
    """torch's dynamo exporter with ``optimize=False`` gives a Conv without bias the bias
    ``Expand(CastLike(0, x), Shape(W)[:1])``. Folded into a constant, conv1's dead units 1 and 4 (zero
    filters, zero batch-norm scale and shift) can go; computed at run time, they were frozen."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w1[[1, 4]] = 0.0
    scale, shift = rng.uniform(0.5, 1.5, 8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    scale[[1, 4]], shift[[1, 4]] = 0.0, 0.0
    nodes = [onnx.helper.make_node("Shape", ["w1"], ["out_channels"], start=0, end=1),
             onnx.helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
             onnx.helper.make_node("CastLike", ["zero", "x"], ["zero_like_x"]),
             onnx.helper.make_node("Expand", ["zero_like_x", "out_channels"], ["bias1"]),
             onnx.helper.make_node("Conv", ["x", "w1", "bias1"], ["c1"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["n1"]),
             onnx.helper.make_node("Relu", ["n1"], ["r1"]),
             onnx.helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             onnx.helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
             onnx.helper.make_node("Flatten", ["g"], ["f"]),
             onnx.helper.make_node("Gemm", ["f", "fc"], ["y"])]
    exp = _image_model(tmp_path, "fill_bias", nodes, {
        "w1": w1, "scale": scale, "shift": shift, "mean": np.zeros(8, np.float32), "var": np.ones(8, np.float32),
        "w2": rng.standard_normal((6, 8, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((6, 3)).astype(np.float32)}, opset=18)
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 2 * (27 + 1 + 2 + 6 * 9)  # filters, the zero bias, scale and shift, conv2 columns
    assert not {"Expand", "CastLike", "Shape"} & {n.op_type for n in model.graph.node}


# ---------------------------------------------------------------------------------- split/chunk
@pytest.mark.parametrize("exporter", ["legacy"])  # dynamo writes the same Split with explicit sizes
def test_split_sizes_follow_removed_channels(zoo_export, tmp_path, exporter: str) -> None:
    exp = zoo_export("SplitNet", exporter, plants=models.PLANTS["SplitNet"])
    conv2 = 27 + 1 + 8                           # conv unit 2 feeds left (8 filters of 1x1)
    conv9 = 27 + 1 + 8 * 9                       # conv unit 9 feeds right (8 filters of 3x3)
    right1 = 9 * 9 + 1 + 5                       # right filter over 9 inputs, bias, fc column
    assert exp.expected_drop == conv2 + conv9 + right1 == 223
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 223
    split = next(n for n in model.graph.node if n.op_type == "Split")
    assert _init(model, split.input[1]).tolist() == [5, 9]


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_chunk_halves_become_unequal(zoo_export, tmp_path, exporter: str) -> None:
    """``chunk(2)``: dynamo writes Split(num_outputs=2), legacy two Slices with shape-computed bounds."""
    exp = zoo_export("ChunkNet", exporter, plants=models.PLANTS["ChunkNet"])
    assert exp.expected_drop == 3 * (27 + 1 + 4)
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 96
    shapes = _weight_shapes(model)
    assert shapes["left.weight"] == (4, 5, 1, 1) and shapes["right.weight"] == (4, 4, 1, 1)


def test_slices_with_negative_start_follow_removed_channels(zoo_export, tmp_path) -> None:
    exp = zoo_export("SliceNet", "legacy", plants=models.PLANTS["SliceNet"])
    assert exp.expected_drop == 4 * (27 + 1 + 4)  # units 1, 5 feed head, 7 and 9 feed tail
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 128
    shapes = _weight_shapes(model)
    assert shapes["head.weight"] == (4, 4, 1, 1) and shapes["tail.weight"] == (4, 2, 1, 1)


def test_transpose_layout_matmul(zoo_export, tmp_path) -> None:
    exp = zoo_export("TokenMLP", "legacy", keep_bn=True, plants=models.PLANTS["TokenMLP"])
    assert exp.expected_drop == (12 + 1 + 12) + (7 + 1 + 3)
    report, _ = _compact(exp, tmp_path)
    assert _drop(report) == 36


# ------------------------------------------------------------------------------------ options
def test_round_to_rounds_convolution_widths_only(zoo_export, tmp_path) -> None:
    """Only convolutions care about widths (onnxruntime's blocked layout); a fully connected width loses every
    dead unit."""
    plants = (("conv2", tuple(range(9)), "fanin"), ("fc1", tuple(range(0, 50, 10)), "fanin"))
    exp = zoo_export("LeNet5", "legacy", plants=plants)
    report, model = _compact(exp, tmp_path, round_to=8)
    shapes = _weight_shapes(model)
    assert shapes["conv2.weight"] == (8, 6, 5, 5)    # 16 - 9 dead = 7, rounded up to 8: 8 removed
    assert shapes["fc1.weight"] == (115, 200)        # 120 - 5 dead, not rounded; 8 maps of 25 columns
    assert sorted(report.result.widths.values()) == [6, 8, 84, 115]


@pytest.mark.parametrize(("dead", "width"), [(13, 3), (12, 4), (11, 8)])
def test_round_to_leaves_only_narrow_widths_free(zoo_export, tmp_path, dead: int, width: int) -> None:
    """A width of at most ``NARROW_WIDTH`` units stays as it is; a wider one below ``round_to`` is rounded up to
    it (onnxruntime reads a convolution input narrower than its block through a slower direct path)."""
    exp = zoo_export("LeNet5", "legacy", plants=(("conv2", tuple(range(dead)), "fanin"),))
    report, model = _compact(exp, tmp_path, round_to=8)
    assert _weight_shapes(model)["conv2.weight"] == (width, 6, 5, 5)
    assert sorted(report.result.widths.values()) == sorted([6, width, 120, 84])


def test_sparse_coo_output_is_smaller_and_equal(tmp_path) -> None:
    module = models.build("MLP")
    models.plant_dead(module, "fc1", (0, 1), "fanin")
    with torch.no_grad():
        keep = torch.rand(module.fc1.weight.shape, generator=torch.Generator().manual_seed(0)) < 0.1
        module.fc1.weight.mul_(keep)
    path = models.export(module, tmp_path / "sparse.onnx", "legacy")
    exp = models.Exported(module, path)
    dense_report, _ = _compact(exp, tmp_path, "dense.onnx")
    coo_report, coo = _compact(exp, tmp_path, "coo.onnx", sparse_format="coo")
    assert (tmp_path / "coo.onnx").stat().st_size < 0.5 * (tmp_path / "dense.onnx").stat().st_size
    assert "fc1.weight" in {s.values.name for s in coo.graph.sparse_initializer}
    assert dense_report.after.params == coo_report.after.params == models.param_count(module) - 2 * 885


def test_initializers_listed_as_inputs_get_their_new_shapes(tmp_path) -> None:
    """``keep_initializers_as_inputs=True`` declares each weight as a graph input with its shape too."""
    module = models.build("MLP")
    models.plant_dead(module, "fc2", (1, 2), "fanout")
    path = str(tmp_path / "as_inputs.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(module, (module.sample(1),), path, dynamo=False, keep_initializers_as_inputs=True,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    report, model = _compact(models.Exported(module, path), tmp_path)
    assert _drop(report) == 2 * (300 + 1 + 10)
    declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert declared["fc2.weight"] == [98, 300] and declared["fc3.weight"] == [10, 98]


def test_a_weight_that_is_also_a_graph_output_keeps_its_shape(tmp_path) -> None:
    """A file that returns a weight beside the scores (a debugging export, a frozen graph's variable): that
    output keeps its shape, so the space the weight spans stays whole, while other spaces still shrink
    (the weight lost its dead units and the output its shape)."""
    module = models.build("MLP")
    fc1_drop = models.plant_dead(module, "fc1", (3, 4))
    models.plant_dead(module, "fc2", (1, 2), "fanout")
    path = tmp_path / "weight_out.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(module, (module.sample(1),), str(path), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("fc2.bias", onnx.TensorProto.FLOAT, [100]))
    onnx.save(model, str(path))
    report, _ = _compact(models.Exported(module, str(path)), tmp_path)
    assert _drop(report) == fc1_drop
    x = module.sample(2).numpy()
    got, want = (ort.InferenceSession(str(p)).run(["fc2.bias"], {"input": x})[0] for p in (tmp_path / "out.onnx", path))
    np.testing.assert_array_equal(got, want)


def test_nothing_dead_changes_nothing(zoo_export, tmp_path) -> None:
    exp = zoo_export("DepthwiseConcat", "legacy")
    report, model = _compact(exp, tmp_path)
    assert _drop(report) == 0 and not report.result.modified
    assert _weight_shapes(model) == _weight_shapes(onnx.load(exp.path))


def test_cli_compact_prints_before_and_after(zoo_export, tmp_path) -> None:
    exp = zoo_export("MLP", "legacy", plants=models.PLANTS["MLP"])
    out = tmp_path / "cli.onnx"
    done = subprocess.run([sys.executable, "-m", "nestc", "compact", exp.path, "-o", str(out), "--round-to", "1"],
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    numbers = re.search(r"params ([\d,]+) -> ([\d,]+)", done.stdout)
    assert numbers, done.stdout
    before, after = (int(g.replace(",", "")) for g in numbers.groups())
    assert (before, after) == (266610, 266610 - 2079)
    assert api.inspect(out).params == after
    x = exp.module.sample(4).numpy()
    models.assert_close(models.ort_run(out, x), models.ort_run(exp.path, x))
