"""The ONNX frontend on real exports: loaded networks compute what onnxruntime computes, at any batch.

The exports are the zoo's standard planted ones (:data:`models.PLANTS`), shared with the compaction
tests. Covers torch's dynamo exporter (static batch 1, constants folded, ``Split(num_outputs)``, Reshape
targets with ``allowzero``), the legacy exporter (dynamic batch, run-time ``Shape -> Gather ->
Unsqueeze -> Concat -> Reshape`` targets, ``Slice`` bounds computed from shapes, and without
constant folding ``Transpose`` of weights and kept BatchNormalization), opset conversion, the ops of
GELU (``Erf``), LayerNorm, Mish and Softplus exports, model-local functions (``export_modules_as_functions``)
and ``nestc inspect``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import models
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nestc import api
from nestc.channels.analysis import analyse_channels, sample_inputs
from nestc.frontends import load_model
from nestc.frontends.onnx_loader import default_opset
from nestc.ir import Network
from nestc.ir.classifier import trainable_view
from nestc.ir.emit import emit_model
from nestc.stats import model_stats
from nestc.training import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

VARIANTS = [
    ("MLP", "dynamo", False), ("MLP", "legacy", False),
    ("LeNet5", "dynamo", False), ("LeNet5", "legacy", False),
    ("ViewNet", "dynamo", False), ("ViewNet", "legacy", False),
    ("ConvBN", "legacy", True), ("Residual", "dynamo", False), ("Residual", "legacy", True),
    ("DepthwiseConcat", "dynamo", False), ("DepthwiseConcat", "legacy", False),
    ("SplitNet", "legacy", False), ("ChunkNet", "dynamo", False), ("ChunkNet", "legacy", False),
    ("SliceNet", "legacy", False),
    ("TokenMLP", "dynamo", False), ("TokenMLP", "legacy", True),
]
IDS = [f"{n}-{e}{'-bn' if bn else ''}" for n, e, bn in VARIANTS]


@pytest.mark.parametrize(("name", "exporter", "keep_bn"), VARIANTS, ids=IDS)
def test_loaded_network_matches_onnxruntime_at_any_batch(zoo_export, name: str, exporter: str,
                                                         keep_bn: bool) -> None:
    exp = zoo_export(name, exporter, keep_bn=keep_bn, plants=models.PLANTS[name])
    net = api.load_network(exp.path)
    for batch in (1, 7, 64):
        x = exp.module.sample(batch, seed=batch).numpy()
        reference = models.ort_run(exp.path, x, static_batch=exp.static_batch)
        (got,) = net.run_numpy(x)
        assert got.shape == reference.shape
        models.assert_close(got, reference)
    with torch.no_grad():
        x = exp.module.sample(5)
        models.assert_close(net.run_numpy(x.numpy())[0], exp.module(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "exporter", "keep_bn"), VARIANTS, ids=IDS)
def test_emitted_model_equals_original_in_onnxruntime(zoo_export, name: str, exporter: str, keep_bn: bool) -> None:
    exp = zoo_export(name, exporter, keep_bn=keep_bn, plants=models.PLANTS[name])
    emitted = emit_model(api.load_network(exp.path))
    onnx.checker.check_model(emitted)
    x = exp.module.sample(7, seed=3).numpy()
    reference = models.ort_run(exp.path, x, static_batch=exp.static_batch)
    models.assert_close(models.ort_run(emitted, x), reference)
    assert models.ort_run(emitted, x[:1]).shape[0] == 1


@pytest.mark.parametrize(("name", "exporter", "keep_bn"),
                         [v for v in VARIANTS if v[0] not in ("ConvBN", "Residual") or v[2]],
                         ids=[i for i, v in zip(IDS, VARIANTS) if v[0] not in ("ConvBN", "Residual") or v[2]])
def test_params_equal_torch_numel(zoo_export, name: str, exporter: str, keep_bn: bool) -> None:
    """Every torch parameter is a trainable initializer (BN kept; transposed weights folded back)."""
    exp = zoo_export(name, exporter, keep_bn=keep_bn, plants=models.PLANTS[name])
    assert model_stats(api.load_network(exp.path)).params == models.param_count(exp.module)


def test_shared_initial_bn_parameters_become_separate_parameters(zoo_export) -> None:
    """Fresh BNs share one all-ones scale in a legacy export (``Identity`` per BN): each is a parameter."""
    exp = zoo_export("Residual", "legacy", keep_bn=True, fresh_bn=True, plants=(("trunk", (5,), "fanin"),))
    assert "Identity" in {n.op_type for n in onnx.load(exp.path).graph.node}
    net = api.load_network(exp.path)
    assert "Identity" not in {n.op_type for n in net.nodes}
    assert model_stats(net).params == models.param_count(exp.module)
    x = exp.module.sample(5).numpy()
    models.assert_close(net.run_numpy(x)[0], models.ort_run(exp.path, x))


def test_inspect_cli_json_reports_torch_param_count(zoo_export) -> None:
    exp = zoo_export("LeNet5", "dynamo", plants=models.PLANTS["LeNet5"])
    done = subprocess.run([sys.executable, "-m", "nestc", "inspect", exp.path, "--json"], env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["params"] == models.param_count(exp.module) == 61706
    assert stats["nonzero_params"] <= stats["params"]
    assert stats["macs"] > 0


def test_products_whose_rows_are_not_samples_count_every_row(tmp_path) -> None:
    """A Gemm after ``Flatten(axis=3)`` runs once per position of a sample, and a MatMul with the weight
    first takes the samples as columns: inspect counts what onnxruntime computes for one sample (the
    first was counted for one position, the second for one of its three output rows)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),  # [N, 4, 8, 8]
        helper.make_node("Transpose", ["c"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["nhwc"], ["rows"], axis=3),  # [N * 64, 4]
        helper.make_node("Gemm", ["rows", "pos_w"], ["pos"], name="per_position", transB=1),  # [N * 64, 6]
        helper.make_node("Reshape", ["pos", "flat"], ["features"]),  # [N, 384]
        helper.make_node("Transpose", ["features"], ["columns"], perm=[1, 0]),
        helper.make_node("MatMul", ["head_w", "columns"], ["scores"], name="weight_first"),  # [3, N]
        helper.make_node("Transpose", ["scores"], ["y"], perm=[1, 0]),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("conv_w", (4, 1, 3, 3)), ("pos_w", (6, 4)), ("head_w", (3, 384)))]
    inits.append(numpy_helper.from_array(np.array([-1, 384], np.int64), "flat"))
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / "rows.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    models.assert_close(api.load_network(path).run_numpy(x)[0], models.ort_run(path, x))
    layers = {layer.node: layer.macs for layer in api.inspect(path).layers}
    assert layers == {"conv": 64 * 4 * 9, "per_position": 64 * 6 * 4, "weight_first": 3 * 384}


def test_dynamo_batch_one_export_gets_a_free_batch(zoo_export) -> None:
    exp = zoo_export("ViewNet", "dynamo", plants=models.PLANTS["ViewNet"])
    model = load_model(exp.path)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    x = exp.module.sample(9).numpy()
    models.assert_close(models.ort_run(model, x), models.ort_run(exp.path, x, static_batch=True))


def test_opset_11_export_is_converted_and_still_matches(zoo_export) -> None:
    exp = zoo_export("LeNet5", "legacy", opset=11)
    assert default_opset(onnx.load(exp.path)) == 11
    model = load_model(exp.path)
    assert default_opset(model) >= 13
    assert model.ir_version >= onnx.helper.find_min_ir_version_for(model.opset_import)  # the converter keeps IR 6
    net = api.load_network(exp.path)
    x = exp.module.sample(6).numpy()
    reference = models.ort_run(exp.path, x)
    models.assert_close(net.run_numpy(x)[0], reference)
    models.assert_close(models.ort_run(emit_model(net), x), reference)


def test_opset_13_training_mode_batch_norm_uses_batch_statistics(zoo_export) -> None:
    """A legacy export in ``TrainingMode.TRAINING`` at opset 13 has no ``training_mode`` attribute: its
    BatchNormalization declares the running-statistics outputs, and onnxruntime normalises with the
    batch's statistics. nestc must compute the same, or compress refuses its own output."""
    exp = zoo_export("ConvBN", "legacy", keep_bn=True, train=True, opset=13)
    bns = [n for n in onnx.load(exp.path).graph.node if n.op_type == "BatchNormalization"]
    assert bns and all(len(n.output) > 1 and all(a.name != "training_mode" for a in n.attribute) for n in bns)
    net = api.load_network(exp.path)
    x = exp.module.sample(7, seed=1).numpy()
    reference = models.ort_run(exp.path, x)
    models.assert_close(net.run_numpy(x)[0], reference)
    models.assert_close(models.ort_run(emit_model(net), x), reference)


def test_untransposed_weights_are_parameters(zoo_export) -> None:
    """Without constant folding the legacy exporter feeds MatMul with ``Transpose(fc1.weight)``."""
    exp = zoo_export("TokenMLP", "legacy", keep_bn=True, plants=models.PLANTS["TokenMLP"])
    assert "Transpose" in {n.op_type for n in onnx.load(exp.path).graph.node if "fc1.weight" in n.input}
    net = api.load_network(exp.path)
    assert sum(net.is_trainable(n) for n in net.initializer_order) == len(list(exp.module.parameters()))


def test_chunk_split_gets_explicit_sizes(zoo_export) -> None:
    exp = zoo_export("ChunkNet", "dynamo", plants=models.PLANTS["ChunkNet"])
    splits = [n for n in load_model(exp.path).graph.node if n.op_type == "Split"]
    assert splits and all(len(n.input) == 2 and not any(a.name == "num_outputs" for a in n.attribute)
                          for n in splits)


class GeluConv(models.Zoo):
    """Conv-GELU-pool-Linear; the legacy exporter at opset 13 spells GELU ``0.5 x (1 + Erf(x / sqrt 2))``."""

    INPUT = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.GELU(), torch.nn.Linear(96, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(self.act(self.conv(x)), 2), 1))


class NormMLP(models.Zoo):
    """Linear-LayerNorm-Mish-Linear-Softplus over tokens; opset 17 has LayerNormalization as one node."""

    INPUT = (4, 10)

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = torch.nn.Linear(10, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)
        with torch.no_grad():  # not the initial all-ones scale and zero shift
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(self.fc2(torch.nn.functional.mish(self.norm(self.fc1(x)))))


class ShuffleAttention(models.Zoo):
    """PixelShuffle (DepthToSpace), F.normalize (ReduceL2), a channel attention through Einsum and a repeat
    (Tile)."""

    INPUT = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Linear(4 * 16 * 16 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pixel_shuffle(torch.relu(self.conv(x)), 2)
        flat = torch.nn.functional.normalize(y.flatten(2), dim=2)
        attended = torch.einsum("nck,ndk->ncd", flat, flat)
        mixed = torch.einsum("ncd,ndk->nck", attended, y.flatten(2)).reshape(y.shape)
        return self.fc(mixed.repeat(1, 2, 1, 1).flatten(1))


@pytest.mark.parametrize(("cls", "opset", "ops"), [(GeluConv, 13, {"Erf"}),
                                                   (NormMLP, 17, {"LayerNormalization", "Softplus"}),
                                                   (ShuffleAttention, 17, {"DepthToSpace", "Einsum", "Tile",
                                                                           "ReduceL2"})],
                         ids=["gelu-erf", "layernorm-mish-softplus", "shuffle-einsum-tile-l2"])
def test_legacy_exports_with_new_ops_match_onnxruntime(tmp_path, cls: type[models.Zoo], opset: int,
                                                       ops: set[str]) -> None:
    torch.manual_seed(0)
    module = cls().eval()
    path = models.export(module, tmp_path / "model.onnx", "legacy", opset=opset)
    model = load_model(path)
    assert ops <= {n.op_type for n in model.graph.node}
    net = Network(model)
    # the formula's constants (GELU's sqrt 2, 0.5 and 1) are not trained: parameters are torch's own
    assert model_stats(net).params == models.param_count(module)
    emitted = emit_model(net)
    for batch in (1, 7):
        x = module.sample(batch, seed=batch).numpy()
        reference = models.ort_run(path, x)
        (got,) = net.run_numpy(x)
        assert got.shape == reference.shape
        models.assert_close(got, reference)
        models.assert_close(models.ort_run(emitted, x), reference)


class PreActivation(models.Zoo):
    """Three pre-activation blocks (BN -> ReLU -> Conv) with torch's initial BatchNorm values: all scales
    one, all shifts zero, equal to the running variances and means."""

    INPUT = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norms = torch.nn.ModuleList(torch.nn.BatchNorm2d(8) for _ in range(3))
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for norm, conv in zip(self.norms, self.convs):
            x = x + conv(torch.relu(norm(x)))
        return self.fc(x.mean((2, 3)))


def test_normalisation_parameters_merged_by_value_are_separate_again(tmp_path) -> None:
    """The dynamo exporter stores equal initializers once: one tensor is every BatchNorm's scale and
    running variance. Each becomes its own tensor again, so training updates them separately (the
    shared one made the in-place statistics update break autograd)."""
    torch.manual_seed(0)
    module = PreActivation().eval()
    path = models.export(module, tmp_path / "preact.onnx", "dynamo")
    exported = onnx.load(path).graph
    batch_norms = [n for n in exported.node if n.op_type == "BatchNormalization"]
    assert len(batch_norms) == 3
    assert len({i for n in batch_norms for i in n.input[1:]}) < 12  # the exporter merged them
    net = api.load_network(path)
    loaded = [n for n in net.nodes if n.op_type == "BatchNormalization"]
    assert len({i for n in loaded for i in n.inputs[1:]}) == 12
    assert model_stats(net).params == models.param_count(module)
    x = module.sample(6).numpy()
    models.assert_close(net.run_numpy(x)[0], models.ort_run(path, x, static_batch=True))
    view = trainable_view(net, label="preact")
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64, 3, 8, 8, generator=generator), torch.randint(0, 4, (64,), generator=generator)
    Trainer(TrainConfig(batch_size=16)).fit(view, images, labels, epochs=1)
    scales = [net.tensor(n.inputs[1]).detach() for n in loaded]
    variances = [net.tensor(n.inputs[4]).detach() for n in loaded]
    assert not torch.equal(scales[0], scales[1]) and not torch.equal(scales[0], variances[0])


class ChannelShuffle(models.Zoo):
    """ShuffleNet's channel shuffle written as torchvision does, from ``x.size()``: the legacy exporter
    computes both Reshape targets at run time from Shape, Gather and Div."""

    INPUT = (3, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        batch, channels, height, width = x.size()
        x = x.view(batch, 2, channels // 2, height, width).transpose(1, 2).contiguous()
        x = x.view(batch, channels, height, width)
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def test_channel_shuffle_from_runtime_shapes_runs_at_any_batch(tmp_path) -> None:
    torch.manual_seed(0)
    module = ChannelShuffle().eval()
    path = models.export(module, tmp_path / "shuffle.onnx", "legacy")
    assert "Div" in {n.op_type for n in onnx.load(path).graph.node}
    net = api.load_network(path)
    emitted = emit_model(net)
    for batch in (1, 3):
        x = module.sample(batch, seed=batch).numpy()
        reference = models.ort_run(path, x)
        models.assert_close(net.run_numpy(x)[0], reference)
        models.assert_close(models.ort_run(emitted, x), reference)


class ClassToken(models.Zoo):
    """A learned class token broadcast over the batch (``expand(n, -1, -1)``) and concatenated with
    patch embeddings, as vision transformers do: the Expand target follows the batch at run time."""

    INPUT = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.token = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.mix, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.token.expand(tokens.shape[0], -1, -1), tokens], 1)
        return self.head(torch.relu(self.mix(tokens))[:, 0])


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_expand_to_the_run_time_batch_follows_the_batch(tmp_path, exporter: str) -> None:
    """Folded at batch 1, the Expand target would be a constant [1, 1, 8] and the Concat would fail at
    any other batch; folding at a second batch shows it depends on the batch, so it stays computed."""
    torch.manual_seed(0)
    module = ClassToken().eval()
    path = tmp_path / "token.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":  # writes the -1 entries with ConstantOfShape, Equal and Where
            models.export(module, path, "legacy")
        else:
            torch.onnx.export(module, (torch.randn(2, 3, 8, 8),), str(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("n", min=1, max=64)},))
    net = api.load_network(path)
    assert "Shape" in {n.op_type for n in net.nodes}, "the batch-dependent target is computed at run time"
    emitted = emit_model(net)
    for batch in (1, 3, 8):
        x = module.sample(batch, seed=batch).numpy()
        reference = models.ort_run(path, x)
        models.assert_close(net.run_numpy(x)[0], reference)
        models.assert_close(models.ort_run(emitted, x), reference)


def _shape_subgraph_model() -> onnx.ModelProto:
    """x [N, 2, 3, 4] -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) -> MatMul W -> y [N, 5]."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
        numpy_helper.from_array(rng.standard_normal((24, 5)).astype(np.float32), "w"),
    ]
    graph = helper.make_graph(nodes, "shape_subgraph",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_subgraph_is_folded_and_runs_at_any_batch(tmp_path) -> None:
    path = tmp_path / "shape.onnx"
    onnx.save(_shape_subgraph_model(), str(path))
    model = load_model(path)
    assert {n.op_type for n in model.graph.node} == {"Reshape", "MatMul"}
    target = next(numpy_helper.to_array(t) for t in model.graph.initializer
                  if t.name == model.graph.node[0].input[1])
    assert target.tolist() in ([0, -1], [-1, 24])
    read = {name for node in model.graph.node for name in node.input}
    assert {t.name for t in model.graph.initializer} <= read, "the folded arithmetic's constants are gone"
    net = api.load_network(path)
    emitted = emit_model(net)
    for batch in (1, 3, 10):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 3, 4)).astype(np.float32)
        reference = models.ort_run(path, x)
        models.assert_close(net.run_numpy(x)[0], reference)
        models.assert_close(models.ort_run(emitted, x), reference)


def test_shared_reshape_target_is_freed_per_node(tmp_path) -> None:
    """Two Reshapes share one ``[1, -1]`` target (dynamo deduplicates constants); both get a free batch."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["a"], allowzero=1),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Reshape", ["r", "target"], ["b"], allowzero=1),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("MatMul", ["s", "w"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "target"),
             numpy_helper.from_array(rng.standard_normal((12, 3)).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    path = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    model = load_model(path)
    x = rng.standard_normal((4, 3, 4)).astype(np.float32)
    models.assert_close(models.ort_run(model, x), models.ort_run(path, x, static_batch=True))


def test_a_named_free_batch_keeps_its_name(tmp_path) -> None:
    """Callers address the batch by the name their exporter gave it (``dynamic_axes={"x": {0: "batch"}}``);
    only fixed batches get nestc's ``N``."""
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    model = load_model(tmp_path / "m.onnx")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"


class _Block(torch.nn.Module):
    """A Linear and its ReLU: exported as one model-local function."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(width_in, width_out)
        self.act = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


def test_model_local_functions_are_inlined_and_compacted(tmp_path) -> None:
    """torch's ``export_modules_as_functions`` calls each block through a function of the model's own
    domain (an op type no handler knows); the functions are inlined, and dead units inside them go."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), _Block(12, 8), _Block(8, 6), torch.nn.Linear(6, 3))
    with torch.no_grad():
        net[1].fc.weight[[2, 5]] = 0.0  # hidden units 2 and 5 of the first block: zero fan-in, zero bias
        net[1].fc.bias[[2, 5]] = 0.0
    path = tmp_path / "functions.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, 4),), str(path), dynamo=False, opset_version=17,
                          export_modules_as_functions={_Block}, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    assert onnx.load(str(path)).functions
    report = api.compact(path, tmp_path / "out.onnx")
    assert report.after.params == report.before.params - 2 * (12 + 1 + 6)
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))


def test_an_unread_max_pool_indices_output_is_dropped(tmp_path) -> None:
    """Converters that name MaxPool's optional ``Indices`` output on every pool: nothing reads it, so the
    model loads and compacts (it was refused at run time: the Indices output is not supported)."""
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    conv_w[2] = 0.0  # channel 2 is dead after the ReLU
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p", "indices"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(conv_w, "conv_w"),
             numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc_w")]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = api.compact(path, tmp_path / "out.onnx")
    assert report.after.params == report.before.params - 9 - 3 * 16
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))


@pytest.mark.parametrize("imports", [[("", 17)], [("ai.onnx", 13)], [("ai.onnx", 8)], [("", 17), ("ai.onnx", 17)],
                                     [("", 11), ("com.microsoft", 1), ("ai.onnx.ml", 3)]],
                         ids=["nodes-ai.onnx-import-default", "ai.onnx-13", "ai.onnx-8-converted", "both-imported",
                              "opset-11-with-unused-com.microsoft"])
def test_the_default_domain_spelt_ai_onnx_loads_and_compacts(tmp_path, imports: list[tuple[str, int]]) -> None:
    """ONNX's default domain has two names; converters that write nodes or imports as ``ai.onnx`` (or mix
    both) make files onnxruntime runs and onnx's checker and version converter refused. An old opset that
    also imports ``com.microsoft`` (onnxruntime's optimiser and tf2onnx write it, used or not) was refused
    after its conversion, asking onnx for the IR version a domain it has no table for needs."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 5)).astype(np.float32)
    w1[:, 3] = 0.0  # hidden unit 3 has no fan-in (and no bias): dead
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], domain="ai.onnx"),
             helper.make_node("Relu", ["h"], ["r"], domain="ai.onnx"),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32),
                                                                        "w2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports])
    model.ir_version = 7
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    assert default_opset(load_model(path)) >= 13
    report = api.compact(path, tmp_path / "out.onnx")
    assert report.after.params == report.before.params - 6 - 3
    x = rng.standard_normal((4, 6)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))


def test_nodes_no_output_depends_on_are_dropped_with_their_weights(tmp_path) -> None:
    """A detached branch (a MatMul with its own weight, then an operator nestc lacks) and an initializer that
    is also a graph input (IR 3 style) read only by it: onnxruntime never runs them, so they load without
    complaint, count for nothing and are gone from the written file, which computes what the original does."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="live"),
             helper.make_node("MatMul", ["x", "w_dead"], ["d"], name="dead"),
             helper.make_node("Resize", ["d", "", "scales"], ["d2"], name="dead_resize")]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((6, 40)).astype(np.float32), "w_dead"),
             numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "scales")]
    graph = helper.make_graph(nodes, "detached", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6]),
                                                  helper.make_tensor_value_info("w_dead", TensorProto.FLOAT, [6, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / "detached.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert api.inspect(path).params == 18
    api.compact(path, tmp_path / "out.onnx")
    written = onnx.load(str(tmp_path / "out.onnx")).graph
    assert [n.op_type for n in written.node] == ["MatMul"] and [t.name for t in written.initializer] == ["w"]
    assert [i.name for i in written.input] == ["x"]
    x = rng.standard_normal((4, 6)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))


def _cntk_style_model(rng: np.random.Generator, ir_version: int, opset: int) -> onnx.ModelProto:
    """The shape of the ONNX model zoo's MNIST models (CNTK; IR version 3 at opset 8, converted to opset 12
    later): every initializer is also a graph input, biases are ``Add`` of ``[C, 1, 1]`` tensors, the batch is
    fixed at 1 and the classifier's weight reaches its MatMul through ``Reshape(Parameter, shape)``. Channel 1
    of the convolution is dead."""
    conv = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((4, 1, 1)).astype(np.float32)
    conv[1], bias[1] = 0.0, 0.0
    inits = [numpy_helper.from_array(conv, "Parameter5"), numpy_helper.from_array(bias, "Parameter6"),
             numpy_helper.from_array(np.array([1, 64], np.int64), "Pooling_reshape0_shape"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 4, 3)).astype(np.float32), "Parameter193"),
             numpy_helper.from_array(np.array([64, 3], np.int64), "Parameter193_reshape1_shape"),
             numpy_helper.from_array(rng.standard_normal((1, 3)).astype(np.float32), "Parameter194")]
    nodes = [helper.make_node("Conv", ["Input3", "Parameter5"], ["conv"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
             helper.make_node("Add", ["conv", "Parameter6"], ["plus"]),
             helper.make_node("Relu", ["plus"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["pool", "Pooling_reshape0_shape"], ["flat"]),
             helper.make_node("Reshape", ["Parameter193", "Parameter193_reshape1_shape"], ["Parameter193_reshape1"]),
             helper.make_node("MatMul", ["flat", "Parameter193_reshape1"], ["times"]),
             helper.make_node("Add", ["times", "Parameter194"], ["Plus214_Output_0"])]
    inputs = [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 8, 8])] + [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "CNTKGraph", inputs,
                              [helper.make_tensor_value_info("Plus214_Output_0", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="CNTK")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(("ir_version", "opset"), [(3, 8), (7, 12)])
def test_initializers_listed_as_inputs_are_weights_even_behind_a_reshape(tmp_path, ir_version: int,
                                                                         opset: int) -> None:
    """Initializers listed as graph inputs are the file's weights: the classifier reached through
    ``Reshape(Parameter193)`` is a parameter, and the dead channel goes from the convolution, its bias and the
    classifier's rows; the written file computes what the original does, at any batch. IR 3 had to list
    them, and the written file does not; a later file listed them by choice, and the written file does too."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cntk.onnx"
    onnx.save(_cntk_style_model(rng, ir_version, opset), str(path))
    assert api.inspect(path).params == 36 + 4 + 192 + 3
    report = api.compact(path, tmp_path / "out.onnx")
    assert report.after.params == report.before.params - (9 + 1 + 16 * 3)
    declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in onnx.load(str(tmp_path / "out.onnx")).graph.input}
    if ir_version == 3:
        assert list(declared) == ["Input3"]
    else:
        assert "Parameter193" not in declared and declared["Parameter193_reshape1"] == [48, 3]
        assert declared["Parameter5"] == [3, 1, 3, 3]
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))
    batch = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", batch), models.ort_run(path, batch, static_batch=True))


def _batch_two_export(target: list[int]) -> onnx.ModelProto:
    """A graph as torch's dynamo exporter writes it for an example batch of 2: the input, the outputs and
    every intermediate value declared at batch 2, and the flatten a Reshape to ``target`` (``allowzero``)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "target"], ["flat"], name="view", allowzero=1),
             helper.make_node("Gemm", ["flat", "fc_w"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal((3, 4 * 5 * 5)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.array(target, np.int64), "target")]
    value_info = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                  for name, shape in (("c", [2, 4, 5, 5]), ("r", [2, 4, 5, 5]), ("flat", [2, 100]))]
    graph = helper.make_graph(nodes, "batch2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits,
                              value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("target", [[2, -1], [2, 100]], ids=["inferred-width", "spelt-out"])
def test_an_export_at_batch_two_gets_a_free_batch(tmp_path, target: list[int]) -> None:
    """``torch.onnx.export(model, torch.randn(2, ...), dynamo=True)`` fixes the batch at 2 in the flatten's
    target and in every declared shape. The declared shapes hid the batch folded at (the target was left
    at 2: refused at batch 1), and ``[2, -1]`` folded at batch 1 became ``[-1, 50]``, half a sample per row."""
    path = tmp_path / "batch2.onnx"
    onnx.save(_batch_two_export(target), str(path))
    net = api.load_network(path)
    emitted = emit_model(net)
    x = np.random.default_rng(1).standard_normal((6, 1, 5, 5)).astype(np.float32)
    reference = np.concatenate([models.ort_run(path, x[i: i + 2]) for i in range(0, 6, 2)])
    for batch in (1, 6):
        models.assert_close(net.run_numpy(x[:batch])[0], reference[:batch])
        models.assert_close(models.ort_run(emitted, x[:batch]), reference[:batch])


def test_an_export_at_batch_two_frees_the_batch_of_reshapes_after_reshapes(tmp_path) -> None:
    """A GroupNorm exports as ``Reshape(x, [0, groups, -1])``, InstanceNormalization and ``Reshape`` back to
    ``[2, C, H, W]``; the classifier's flatten after it is ``[2, 48]``. Its input is only seen to be led by the
    batch once the GroupNorm's target is freed (it was left at 2, and the model refused at batch 1)."""

    class GroupNormNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 12, 3, padding=1)
            self.norm = torch.nn.GroupNorm(3, 12)
            self.fc = torch.nn.Linear(48, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.norm(self.conv(x))), (2, 2))
            return self.fc(pooled.flatten(1))

    torch.manual_seed(0)
    path = tmp_path / "groupnorm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(GroupNormNet().eval(), (torch.randn(2, 1, 8, 8),), str(path), dynamo=True)
    reshapes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Reshape"]
    assert len(reshapes) >= 3, "the export this test is about: GroupNorm's two Reshapes and the flatten"
    net = api.load_network(path)
    emitted = emit_model(net)
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    reference = np.concatenate([models.ort_run(path, x[i: i + 2]) for i in range(0, 6, 2)])
    for batch in (1, 6):
        models.assert_close(net.run_numpy(x[:batch])[0], reference[:batch], rtol=1e-4, atol=1e-5)
        models.assert_close(models.ort_run(emitted, x[:batch]), reference[:batch], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("resize", [{"size": (12, 12), "mode": "bilinear"}, {"scale_factor": 2.0, "mode": "nearest"},
                                    {"scale_factor": 0.5, "mode": "bicubic", "align_corners": True}],
                         ids=["size-bilinear", "scale-nearest", "scale-bicubic-corners"])
def test_interpolation_runs_at_any_batch_and_matches_onnxruntime(tmp_path, exporter: str, resize: dict) -> None:
    """``F.interpolate`` exports as Resize: the dynamo exporter writes a target size as constant sizes
    ``[1, C, H, W]`` at batch 1 (freed to the spatial axes), the legacy one computes them from ``Shape``; either
    way the convolution before it keeps channels that compaction can remove."""

    class Interpolating(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.LazyLinear(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.nn.functional.interpolate(torch.relu(self.conv(x)), **resize).flatten(1))

    torch.manual_seed(0)
    module = Interpolating()
    module(torch.randn(1, 1, 10, 10))
    path = tmp_path / "interpolating.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module.eval(), (torch.randn(1, 1, 10, 10),), str(path), dynamo=True)
        else:
            torch.onnx.export(module.eval(), (torch.randn(1, 1, 10, 10),), str(path), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}})
    assert "Resize" in {n.op_type for n in onnx.load(str(path)).graph.node}
    net = api.load_network(path)
    # the convolution's channels pass the Resize (scales, constant sizes, or sizes read from its own shape)
    assert len(analyse_channels(net, sample_inputs(net)[0]).resizable_spaces()) == 1
    x = np.random.default_rng(1).standard_normal((6, 1, 10, 10)).astype(np.float32)
    reference = models.ort_run(path, x, static_batch=exporter == "dynamo")
    models.assert_close(net.run_numpy(x)[0], reference, rtol=1e-4, atol=1e-5)
    models.assert_close(models.ort_run(emit_model(net), x), reference, rtol=1e-4, atol=1e-5)


def test_an_opset_9_upsample_is_converted_to_resize(tmp_path) -> None:
    """Upsample (opsets 7 to 9) is no op of the supported opsets; onnx's version converter turns it into Resize,
    so it is accepted in a file that is converted (it was refused as unsupported before the conversion)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Upsample", ["c", "s"], ["u"]),
             helper.make_node("Flatten", ["u"], ["f"]), helper.make_node("Gemm", ["f", "fc", "b"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal((3, 4 * 12 * 12)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    graph = helper.make_graph(nodes, "upsample",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / "upsample.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4), str(path))
    net = api.load_network(path)
    assert "Resize" in {n.op_type for n in net.nodes} and "Upsample" not in {n.op_type for n in net.nodes}
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    models.assert_close(net.run_numpy(x)[0], models.ort_run(path, x))
    models.assert_close(models.ort_run(emit_model(net), x), models.ort_run(path, x))


def test_training_mode_batch_norm_of_one_sample_is_its_shift(tmp_path) -> None:
    """A ``BatchNorm1d`` exported in training mode normalises ``[N, C]`` features with the batch's statistics;
    one sample has one value per channel, its variance is zero and onnxruntime returns the shift. nestc
    runs one sample to inspect a model, and torch's batch norm refused it ("Expected more than 1 value
    per channel when training")."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
             helper.make_node("BatchNormalization", ["h", "scale", "shift", "mean", "var"], ["n", "mean2", "var2"],
                              name="bn", training_mode=1),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (6, 4)), ("scale", (6,)), ("shift", (6,)), ("mean", (6,)), ("w2", (3, 6)))]
    inits.append(numpy_helper.from_array(np.ones(6, np.float32), "var"))
    graph = helper.make_graph(nodes, "bn1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    path = tmp_path / "bn1d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    assert api.inspect(path).params == 6 * 4 + 2 * 6 + 3 * 6
    net = api.load_network(path)
    for batch in (1, 5):  # onnxruntime's zero variance of one value is a rounding error, divided by sqrt(eps)
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        models.assert_close(net.run_numpy(x)[0], models.ort_run(path, x), rtol=1e-4, atol=1e-4)


def test_an_opset_11_softmax_over_an_inner_axis_runs_at_any_batch(tmp_path) -> None:
    """Before opset 13 Softmax normalised the flattened axes from ``axis`` on; onnx's version converter
    writes that as ``Flatten`` to ``[N * C, H * W]``, ``Softmax`` and a ``Reshape`` back to ``Shape(x)``.
    The folded target ``[1, 4, 3, 3]`` kept its batch of 1: the batch did not lead the flattened rows, so
    the model ran at batch 1 only."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], name="spatial_softmax", axis=2),
             helper.make_node("Flatten", ["s"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal((5, 36)).astype(np.float32), "fc_w")]
    graph = helper.make_graph(nodes, "softmax11",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    path = tmp_path / "softmax11.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    net = api.load_network(path)
    emitted = emit_model(net)
    for batch in (1, 4):
        x = rng.standard_normal((batch, 2, 3, 3)).astype(np.float32)
        reference = models.ort_run(path, x)
        models.assert_close(net.run_numpy(x)[0], reference)
        models.assert_close(models.ort_run(emitted, x), reference)


def test_an_output_declared_without_a_shape_gets_the_inferred_one(tmp_path) -> None:
    """``helper.make_tensor_value_info("y", FLOAT, None)`` leaves the output's shape out: onnxruntime runs the
    file, onnx's checker refused it without naming the output ("Field 'shape' of 'type' is required")."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 5)).astype(np.float32)
    w1[:, 2] = 0.0  # hidden unit 2 is dead
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "shapeless.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = api.compact(path, tmp_path / "out.onnx")
    assert report.after.params == report.before.params - 6 - 3
    written = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(written)
    assert [d.dim_value or d.dim_param for d in written.graph.output[0].type.tensor_type.shape.dim] == ["N", 3]
    x = rng.standard_normal((4, 6)).astype(np.float32)
    models.assert_close(models.ort_run(tmp_path / "out.onnx", x), models.ort_run(path, x))


def _constant_of_export_batch(constant: np.ndarray) -> onnx.ModelProto:
    """``Gemm -> Max(h, constant) -> Gemm`` exported at batch 2, ``constant`` of shape [2, 4] (what the dynamo
    exporter folds ``torch.maximum(h, torch.zeros_like(h))`` into)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
             helper.make_node("Max", ["h", "floor"], ["m"], name="maximum"),
             helper.make_node("Gemm", ["m", "w2"], ["y"], name="fc2", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(constant.astype(np.float32), "floor"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "export_batch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_constant_repeating_one_sample_over_the_export_batch_follows_the_batch(tmp_path) -> None:
    """A ``[2, 4]`` constant of equal rows, folded at the export batch of 2, met the data at batch 1 and
    failed ("The size of tensor a (1) must match the size of tensor b (2)"); one row broadcasts to every
    batch. A constant whose rows differ is not one sample: it is left as the file has it."""
    path = tmp_path / "zeros_like.onnx"
    onnx.save(_constant_of_export_batch(np.zeros((2, 4))), str(path))
    net = api.load_network(path)
    emitted = emit_model(net)
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    reference = np.concatenate([models.ort_run(path, x[i: i + 2]) for i in range(0, 6, 2)])
    for batch in (1, 6):
        models.assert_close(net.run_numpy(x[:batch])[0], reference[:batch])
        models.assert_close(models.ort_run(emitted, x[:batch]), reference[:batch])
    rows = tmp_path / "rows.onnx"
    onnx.save(_constant_of_export_batch(np.arange(8.0).reshape(2, 4) - 4), str(rows))
    assert load_model(rows).graph.initializer[1].dims == [2, 4]
    models.assert_close(api.load_network(rows).run_numpy(x[:2])[0], models.ort_run(rows, x[:2]))
