"""NeST passes on real seeds and real data: each changes what it claims, and the emitted graph
computes exactly what the IR computes (onnxruntime as the judge)."""

from __future__ import annotations

import math

import models
import numpy as np
import onnx
import pytest
import torch

from nestc import runtime
from nestc.api import load_network
from nestc.channels.analysis import analyse_channels, sample_inputs
from nestc.data import fit_to_input, load_dataset
from nestc.ir.classifier import ClassifierView
from nestc.ir.emit import emit_model
from nestc.ir.network import Network
from nestc.passes import grow_feature_maps as grow_feature_maps_module
from nestc.passes.base import Probe, active_connections, effective_gradients, ensure_masks, layers
from nestc.passes.compact import compact
from nestc.passes.grow_connections import grow_connections
from nestc.passes.grow_feature_maps import grow_feature_maps
from nestc.passes.grow_neurons import grow_neurons
from nestc.passes.partial_area import partial_area
from nestc.passes.prune_connections import effective_magnitude, prune_connections
from nestc.passes.prune_units import prune_units, unit_scores
from nestc.passes.unit_spaces import prunable_spaces
from nestc.seeds import build_seed
from nestc.stats import model_stats


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    data = fit_to_input(load_dataset("embedded"), ["N", 1, 28, 28])
    return torch.from_numpy(data.x_train[:512]), torch.from_numpy(data.y_train[:512])


def _probe(arch: str, images, width: float = 0.5, density: float = 0.2) -> Probe:
    net = Network(build_seed(arch, width_ratio=width, density=density))
    ensure_masks(net)
    x, y = images
    return Probe(ClassifierView(net), x, y)


def _assert_emitted_matches(net: Network, x: torch.Tensor) -> None:
    model = emit_model(net)
    onnx.checker.check_model(model)
    expected = net.run_numpy(x[:16].numpy())[0]
    actual = runtime.run(runtime.session(model), [x[:16].numpy()])[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _masked_export(module: torch.nn.Module, path, sample_shape: tuple[int, ...], keep_bn: bool = False,
                   **kwargs) -> Network:
    """``module`` exported by the legacy exporter with a free batch (BatchNormalization kept with ``keep_bn``),
    loaded and given connection masks."""
    if keep_bn:
        kwargs.update(do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    torch.onnx.export(module, (torch.randn(2, *sample_shape),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, **kwargs)
    net = load_network(path)
    ensure_masks(net)
    return net


def test_masks_follow_the_seed_zeros(images) -> None:
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    for layer in layers(net):
        assert torch.equal(net.mask(layer.weight) > 0, net.tensor(layer.weight) != 0)


def test_dormant_connections_get_dense_gradients(images) -> None:
    probe = _probe("lenet-300-100", images)
    grads, _ = effective_gradients(probe)
    net = probe.view.net
    first = layers(net)[0].weight
    dormant = net.mask(first) == 0
    assert bool((grads[first][dormant] != 0).any()), "growth needs gradients for masked-out weights"


def test_grow_connections_activates_largest_gradients(images) -> None:
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    grads, _ = effective_gradients(probe)
    before = {layer.weight: net.mask(layer.weight).clone() for layer in layers(net)}
    weights_before = {layer.weight: net.tensor(layer.weight).detach().clone() for layer in layers(net)}
    result = grow_connections(net, grads, ratio=0.1)
    assert result.modified
    for layer in layers(net):
        old, new = before[layer.weight], net.mask(layer.weight)
        assert bool((new >= old).all()), "growth never deactivates"
        added = (new > old)
        assert int(added.sum()) == int(0.1 * int(old.sum()))
        dormant_scores = grads[layer.weight].abs()[(old == 0) & ~added]
        if dormant_scores.numel():
            assert float(grads[layer.weight].abs()[added].min()) >= float(dormant_scores.max()) - 1e-12
        assert torch.equal(net.tensor(layer.weight)[old > 0], weights_before[layer.weight][old > 0])


def test_prune_connections_removes_smallest_and_keeps_rest(images) -> None:
    probe = _probe("lenet-300-100", images, density=1.0)
    net = probe.view.net
    total = active_connections(net)
    result = prune_connections(net, 0.3)
    assert result.modified
    removed = total - active_connections(net)
    assert 0.25 * total <= removed <= 0.3 * total
    first = layers(net)[0].weight
    kept = net.tensor(first).detach()[net.mask(first) > 0].abs()
    gone_mask = net.mask(first) == 0
    assert bool((net.tensor(first)[gone_mask] == 0).all()), "pruned weights are zeroed"
    assert float(kept.min()) >= 0
    _assert_emitted_matches(net, images[0])


@pytest.mark.parametrize("arch", ["lenet-5", "resnet18"])
def test_prune_units_removes_weakest_units_and_compact_deletes_them(images, arch: str) -> None:
    """Units are cut whole (through Flatten in LeNet-5, from the whole residual stream in ResNet-18);
    the emitted, compacted graph computes what the masked network computed."""
    net = Network(build_seed(arch, width_ratio=0.25 if arch == "resnet18" else 1.0))
    ensure_masks(net)
    x = images[0][:8] if arch == "lenet-5" else torch.randn(8, 3, 32, 32)
    analysis = analyse_channels(net, x[:2])
    spaces = prunable_spaces(net, analysis)
    scores = {space.space: unit_scores(net, analysis, space) for space in spaces}
    widths = {space.space: analysis.table.spaces[space.space].width for space in spaces}
    result = prune_units(net, 0.3, x)
    live = sum(widths.values())
    assert result.modified and 0.2 * live <= result.details["removed"] <= 0.3 * live
    for space in spaces:
        layer, member = space.producers[0]
        cut = net.mask(layer.weight).movedim(member.axis, 0).reshape(widths[space.space], -1).sum(1) == 0
        assert int((~cut).sum()) >= max(1, widths[space.space] // 2), "no space loses more than half"
        if bool(cut.any()) and bool((~cut).any()):
            normalised = scores[space.space] / scores[space.space].mean()
            assert float(normalised[cut].max()) <= float(normalised[~cut].min()) + 1e-6, "weakest units go first"
    out_widths = {layer.weight: net.tensor(layer.weight).shape[layer.out_axis] for layer in layers(net)}
    with torch.no_grad():
        expected = ClassifierView(net).eval()(x)
    removed = compact(net, x).removed
    assert sum(removed.values()) == result.details["removed"]
    with torch.no_grad():
        torch.testing.assert_close(ClassifierView(net).eval()(x), expected, rtol=1e-4, atol=1e-5)
    narrowed = {layer.weight for layer in layers(net) if net.tensor(layer.weight).shape[layer.out_axis]
                < out_widths[layer.weight]}
    producers = {layer.weight for space in spaces for layer, _ in space.producers}
    assert narrowed and narrowed <= producers
    if arch == "resnet18":
        stream = [space for space in spaces if len(space.producers) > 1]
        assert stream, "residual streams are candidates"
        shared = {layer.weight for space in stream for layer, _ in space.producers}
        assert narrowed & shared, "the residual stream lost units in every convolution that writes it"
    _assert_emitted_matches(net, x)


class SqueezeExcite(torch.nn.Module):
    """conv -> SiLU -> channels scaled by a squeeze-excitation gate -> conv: the gated space is written by
    the first convolution and by the gate's expanding convolution (EfficientNet's block, without depthwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze, self.expand = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)
        self.project, self.fc = torch.nn.Conv2d(16, 8, 1), torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.silu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.fc(torch.relu(self.project(x * gate)).mean((2, 3)))


def test_prune_units_removes_channels_a_squeeze_excitation_gate_multiplies(tmp_path) -> None:
    torch.manual_seed(0)
    module = SqueezeExcite().eval()
    path = tmp_path / "se.onnx"
    net = _masked_export(module, path, (3, 8, 8))
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    gated = [s for s in prunable_spaces(net, analyse_channels(net, x[:2])) if len(s.producers) == 2]
    assert len(gated) == 1, "the gated space has two writers: the block's convolution and the gate's"
    assert prune_units(net, 0.25, x).details["removed"] > 0
    with torch.no_grad():
        expected = ClassifierView(net).eval()(x)
    compact(net, x)
    assert net.tensor("conv.weight").shape[0] < 16
    assert net.tensor("expand.weight").shape[0] == net.tensor("conv.weight").shape[0]
    assert net.tensor("project.weight").shape[1] == net.tensor("conv.weight").shape[0]
    with torch.no_grad():
        torch.testing.assert_close(ClassifierView(net).eval()(x), expected, rtol=1e-4, atol=1e-5)
    _assert_emitted_matches(net, x)


def test_grow_feature_maps_adds_a_gated_channel_to_the_block_and_to_its_gate(tmp_path) -> None:
    """The gated space has two writers: a new channel is a new row of the block's convolution and of the gate's
    expanding one (its gate value), a column of the projection, and the file computes what the network does."""
    torch.manual_seed(0)
    net = _masked_export(SqueezeExcite().eval(), tmp_path / "se.onnx", (3, 8, 8))
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 8, 8, generator=generator), torch.randint(5, (32,), generator=generator)
    assert grow_feature_maps(Probe(ClassifierView(net), x, y), count=1, candidates=2).modified
    assert net.tensor("conv.weight").shape[0] == net.tensor("expand.weight").shape[0] == 17
    assert net.tensor("project.weight").shape[1] == 17 and net.tensor("squeeze.weight").shape[1] == 17
    assert bool(net.tensor("conv.weight")[16].any()) and bool(net.tensor("project.weight")[:, 16].any())
    _assert_emitted_matches(net, x)


class GroupedBottleneck(torch.nn.Module):
    """ResNeXt's block: 1x1 reduce -> grouped 3x3 (4 groups) -> 1x1 expand, added to the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.reduce = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1, bias=False), torch.nn.BatchNorm2d(16))
        self.grouped = torch.nn.Sequential(torch.nn.Conv2d(16, 24, 3, padding=1, groups=4, bias=False),
                                           torch.nn.BatchNorm2d(24))
        self.expand = torch.nn.Conv2d(24, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.expand(torch.relu(self.grouped(torch.relu(self.reduce(x)))))
        return self.fc(torch.relu(x + y).mean((2, 3)))


@pytest.fixture
def grouped_net(tmp_path) -> Network:
    torch.manual_seed(0)
    module = GroupedBottleneck().eval()
    for bn in (module.reduce[1], module.grouped[1]):  # trained-looking statistics, so folding them matters
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnext.onnx"
    return _masked_export(module, path, (1, 28, 28), keep_bn=True)


def _grouped_conv(net: Network):
    return next(n for n in net.nodes if n.op_type == "Conv" and int(n.attr("group", 1)) == 4)


def test_prune_units_cuts_grouped_convolutions_evenly_per_group(grouped_net: Network, images) -> None:
    """The grouped convolution's input and output spaces are prunable: unit ``j`` is channel ``j`` of
    every group, so the groups stay equal and ``group`` stays 4 while both widths shrink."""
    net, x = grouped_net, images[0][:16]
    analysis = analyse_channels(net, x[:2])
    node = _grouped_conv(net)
    spaces = {s.space for s in prunable_spaces(net, analysis)}
    weight_members = [m for m in analysis.members if m.tensor == node.inputs[1]]
    assert {analysis.table.find(m.layout[0].space) for m in weight_members} <= spaces, "both sides prunable"
    assert prune_units(net, 0.3, x).details["removed"] > 0
    with torch.no_grad():
        expected = ClassifierView(net).eval()(x)
    compact(net, x)
    weight = net.tensor(node.inputs[1])
    assert int(node.attr("group")) == 4
    assert weight.shape[1] < 4 and weight.shape[0] < 24 and weight.shape[0] % 4 == 0
    assert net.tensor(layers(net)[1].weight).shape[0] == 4 * weight.shape[1], "reduce keeps 4 equal groups"
    with torch.no_grad():
        torch.testing.assert_close(ClassifierView(net).eval()(x), expected, rtol=1e-4, atol=1e-5)
    _assert_emitted_matches(net, x)


def test_grow_feature_maps_extends_every_group_of_a_grouped_reader(grouped_net: Network, images) -> None:
    """A map grown in the space a grouped convolution reads is a channel in each of its groups."""
    net = grouped_net
    probe = Probe(ClassifierView(net), images[0][:64], images[1][:64])
    node = _grouped_conv(net)
    before = net.tensor(node.inputs[1]).shape[1]
    assert grow_feature_maps(probe, count=1, candidates=2).modified
    assert net.tensor(node.inputs[1]).shape[1] == before + 1 and int(node.attr("group")) == 4
    assert net.tensor(layers(net)[1].weight).shape[0] == 4 * (before + 1)
    _assert_emitted_matches(net, images[0])


def test_grow_feature_maps_adds_a_map_to_every_group_of_a_grouped_convolution(grouped_net: Network, images) -> None:
    """The grouped convolution's own output space grows like a dense one's: one new row at the end of each
    group's block (``group`` stays 4), its BatchNormalization and the reader's columns follow, and every old
    row keeps its values in its group."""
    net = grouped_net
    node = _grouped_conv(net)
    old = net.tensor(node.inputs[1]).detach().clone()
    assert grow_feature_maps(Probe(ClassifierView(net), images[0][:64], images[1][:64]), count=1, candidates=2).modified
    weight = net.tensor(node.inputs[1]).detach()
    assert weight.shape[0] == 28 and int(node.attr("group")) == 4
    old_rows = [7 * g + k for g in range(4) for k in range(6)]
    torch.testing.assert_close(weight[old_rows, : old.shape[1]], old, rtol=0, atol=0)
    assert bool((weight[[6, 13, 20, 27]].flatten(1).abs().sum(1) > 0).all()), "each group's new row is drawn"
    bn = next(n for n in net.nodes if n.op_type == "BatchNormalization" and n.inputs[0] == node.outputs[0])
    assert net.tensor(bn.inputs[1]).shape[0] == 28 and net.tensor(layers(net)[3].weight).shape[1] == 28
    _assert_emitted_matches(net, images[0])


class InvertedBottleneck(torch.nn.Module):
    """MobileNetV2's block without its skip: 1x1 expand -> 3x3 depthwise (multiplier 2) -> BN -> 1x1 project."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = torch.nn.Conv2d(1, 8, 1)
        self.depthwise = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.project, self.fc = torch.nn.Conv2d(16, 8, 1), torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.depthwise(torch.relu(self.expand(x)))))
        return self.fc(torch.relu(self.project(x)).mean((2, 3)))


@pytest.fixture
def inverted_net(tmp_path) -> Network:
    torch.manual_seed(0)
    path = tmp_path / "inverted.onnx"
    return _masked_export(InvertedBottleneck().eval(), path, (1, 28, 28), keep_bn=True)


def test_grown_feature_maps_get_depthwise_filters(inverted_net: Network, images) -> None:
    """A map grown before a depthwise convolution gets filters there too (drawn with its kernels), so it
    carries a signal: with a zero filter it was dead on arrival, and compaction deleted it at once."""
    net = inverted_net
    x, y = images[0][:64], images[1][:64]
    assert grow_feature_maps(Probe(ClassifierView(net), x, y), count=2, candidates=2).modified
    assert tuple(net.tensor("expand.weight").shape) == (10, 1, 1, 1)
    assert tuple(net.tensor("depthwise.weight").shape) == (20, 1, 3, 3)
    assert bool((net.tensor("depthwise.weight").detach()[16:].flatten(1).abs().sum(1) > 0).all())
    _assert_emitted_matches(net, x)
    assert "/expand/Conv" not in compact(net, x).removed, "the grown maps are alive"


def test_prune_connections_judges_effective_weight_after_batch_norm(images) -> None:
    net = Network(build_seed("vgg16", width_ratio=0.0625))
    ensure_masks(net)
    conv = layers(net)[1]
    bn = next(n for n in net.nodes if n.op_type == "BatchNormalization" and n.inputs[0] == conv.node.outputs[0])
    with torch.no_grad():
        gamma = net.tensor(bn.inputs[1])
        gamma.fill_(1.0)
        gamma[0] = 1e-4  # channel 0 is almost switched off by its BN: its weights matter least
    prune_connections(net, 0.05, max_layer_fraction=0.5)
    mask = net.mask(conv.weight)
    assert float(mask[0].mean()) < float(mask[1:].mean())


def _bn_graph(in_shape: list, nodes: list, weights: dict[str, np.ndarray], channels: int) -> Network:
    """A hand-built graph ending in ``BatchNormalization(h) -> y`` over ``channels`` channels, with random
    non-trivial BN parameters (negative scales included), so that the BN is not folded into anything."""
    rng = np.random.default_rng(0)
    weights = {**weights, "gamma": rng.uniform(-2, 2, channels), "beta": rng.uniform(-1, 1, channels),
               "mean": rng.uniform(-1, 1, channels), "var": rng.uniform(0.1, 3, channels)}
    bn = onnx.helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)
    graph = onnx.helper.make_graph(
        [*nodes, bn], "bn", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *in_shape])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    net = Network(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    ensure_masks(net)
    return net


def _bn_gain(net: Network, units: slice, out_axis: int, rank: int) -> torch.Tensor:
    """|gamma| / sqrt(var + eps) of the graph's BN for ``units``, in float64, shaped to broadcast over a weight."""
    gamma = net.tensor("gamma").detach().double()[units]
    gain = gamma.abs() / torch.sqrt(net.tensor("var").detach().double()[units] + 1e-3)
    shape = [1] * rank
    shape[out_axis] = -1
    return gain.reshape(shape)


def _magnitudes(net: Network) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer weight: (effective magnitude, |w|), both float64."""
    return {layer.weight: (effective_magnitude(net, layer).double(), net.tensor(layer.weight).detach().double().abs())
            for layer in layers(net)}


def test_effective_magnitude_reaches_batch_norm_through_a_bias_add() -> None:
    """MatMul -> Add(bias) -> BatchNormalization (a Linear + BatchNorm1d export): each output unit's weights
    get that unit's BN gain."""
    rng = np.random.default_rng(1)
    nodes = [onnx.helper.make_node("MatMul", ["x", "w"], ["z"]), onnx.helper.make_node("Add", ["z", "b"], ["h"])]
    net = _bn_graph([6], nodes, {"w": rng.normal(size=(6, 4)), "b": rng.normal(size=4)}, channels=4)
    score, weight = _magnitudes(net)["w"]
    torch.testing.assert_close(score, weight * _bn_gain(net, slice(0, 4), 1, 2))


def test_effective_magnitude_gives_concatenated_convolutions_the_gain_at_their_offset() -> None:
    """Conv a (2 maps), Conv b (3 maps) + bias -> Concat -> BatchNormalization: b's maps are BN channels 2..4."""
    rng = np.random.default_rng(2)
    nodes = [onnx.helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Conv", ["x", "wb"], ["zb"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Add", ["zb", "bb"], ["b"]),
             onnx.helper.make_node("Concat", ["a", "b"], ["h"], axis=-3)]
    weights = {"wa": rng.normal(size=(2, 3, 3, 3)), "wb": rng.normal(size=(3, 3, 3, 3)),
               "bb": rng.normal(size=(3, 1, 1))}
    net = _bn_graph([3, 5, 5], nodes, weights, channels=5)
    found = _magnitudes(net)
    for name, units in (("wa", slice(0, 2)), ("wb", slice(2, 5))):
        score, weight = found[name]
        torch.testing.assert_close(score, weight * _bn_gain(net, units, 0, 4))


def test_effective_magnitude_ignores_a_batch_norm_behind_a_nonlinearity() -> None:
    """Conv -> Relu -> BatchNormalization: the BN does not scale the weight's contribution linearly."""
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["z"]), onnx.helper.make_node("Relu", ["z"], ["h"])]
    net = _bn_graph([3, 5, 5], nodes, {"w": np.random.default_rng(3).normal(size=(4, 3, 3, 3))}, channels=4)
    score, weight = _magnitudes(net)["w"]
    assert torch.equal(score, weight)


def test_effective_magnitude_ignores_a_batch_norm_that_sees_only_part_of_the_output() -> None:
    """Conv -> BatchNormalization, the Conv's output also a graph output: the BN scales one of its two uses."""
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["h"])]
    net = _bn_graph([3, 5, 5], nodes, {"w": np.random.default_rng(6).normal(size=(4, 3, 3, 3))}, channels=4)
    net.output_names.append("h")
    score, weight = _magnitudes(net)["w"]
    assert torch.equal(score, weight)


def test_effective_magnitude_of_a_directly_following_batch_norm_is_unchanged() -> None:
    """Conv -> BatchNormalization: |w| times the gain, computed in float32 exactly as it always was."""
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["h"])]
    net = _bn_graph([3, 5, 5], nodes, {"w": np.random.default_rng(4).normal(size=(4, 3, 3, 3))}, channels=4)
    gain = net.tensor("gamma").detach().abs() / torch.sqrt(net.tensor("var").detach() + 1e-3)
    expected = net.tensor("w").detach().abs() * gain.reshape(-1, 1, 1, 1)
    assert torch.equal(effective_magnitude(net, layers(net)[0]), expected)


def test_effective_magnitude_maps_a_grouped_transposed_convolution_to_its_output_channels() -> None:
    """ConvTranspose with 2 groups, weight (C_in 4, C_out/g 3, k, k) -> BatchNormalization over 6 channels: weight
    row i, column j feeds output channel (i // 2) * 3 + j, and gets that channel's gain."""
    nodes = [onnx.helper.make_node("ConvTranspose", ["x", "w"], ["h"], group=2)]
    net = _bn_graph([4, 5, 5], nodes, {"w": np.random.default_rng(5).normal(size=(4, 3, 2, 2))}, channels=6)
    score, weight = _magnitudes(net)["w"]
    gain = _bn_gain(net, slice(0, 6), 0, 1)
    expected = torch.stack([torch.stack([weight[i, j] * gain[(i // 2) * 3 + j] for j in range(3)]) for i in range(4)])
    torch.testing.assert_close(score, expected)


def test_grow_neurons_extends_every_member(images) -> None:
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    widths = [net.tensor(layer.weight).shape[layer.out_axis] for layer in layers(net)]
    result = grow_neurons(probe, count=3, beta=0.01, alpha=0.5)
    assert result.modified
    new = [net.tensor(layer.weight).shape[layer.out_axis] for layer in layers(net)]
    assert new == [widths[0] + 3, widths[1] + 3, widths[2]], "hidden spaces grow, the output does not"
    first, second = layers(net)[0], layers(net)[1]
    new_rows = net.mask(first.weight)[-3:]
    new_cols = net.mask(second.weight)[:, widths[0]:widths[0] + 3]
    assert bool((new_rows.sum(1) > 0).all()) and bool((new_cols.sum(0) > 0).all()), "new neurons are bridges"
    assert net.tensor(layers(net)[0].node.inputs[2]).shape[0] == widths[0] + 3
    _assert_emitted_matches(net, images[0])


def test_grow_neurons_birth_strength_scales_new_weights(images) -> None:
    magnitudes = []
    for alpha in (0.1, 1.0):
        probe = _probe("lenet-300-100", images)
        grow_neurons(probe, count=1, beta=0.01, alpha=alpha)
        w = probe.view.net.tensor(layers(probe.view.net)[0].weight).detach()[-1]
        magnitudes.append(float(w[w != 0].abs().mean()))
    assert magnitudes[1] == pytest.approx(10 * magnitudes[0], rel=0.05)


class TwoTowers(torch.nn.Module):
    """Two hidden fully connected layers reading the same input, summed before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2 = torch.nn.Linear(12, 16), torch.nn.Linear(16, 4)
        self.b1, self.b2 = torch.nn.Linear(12, 8), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a2(torch.relu(self.a1(x))) + self.b2(torch.relu(self.b1(x)))


def test_grow_neurons_in_towers_that_read_one_input(tmp_path) -> None:
    """Both towers' hidden spaces tap the same input for their bridging gradients; each grows."""
    torch.manual_seed(0)
    path = tmp_path / "towers.onnx"
    net = _masked_export(TwoTowers().eval(), path, (12,))
    x, y = torch.randn(64, 12), torch.randint(0, 4, (64,))
    assert grow_neurons(Probe(ClassifierView(net), x, y), count=2).details["spaces"] == 2
    assert [tuple(net.tensor(layer.weight).shape) for layer in layers(net)] == [(18, 12), (4, 18), (10, 12), (4, 10)]
    _assert_emitted_matches(net, x)


class AuxiliaryHead(torch.nn.Module):
    """A classifier and, computed after it, an auxiliary head with a hidden convolution space and a hidden
    fully connected space of its own; the auxiliary output comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc1, self.fc2 = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 12), torch.nn.Linear(12, 4)
        self.a1, self.a2, self.a3 = torch.nn.Conv2d(3, 6, 3), torch.nn.Linear(6, 10), torch.nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).mean((2, 3)))))
        return self.a3(torch.relu(self.a2(torch.relu(self.a1(x)).mean((2, 3))))), logits


def test_growth_leaves_spaces_the_loss_does_not_read(tmp_path) -> None:
    """Growth follows the classifier's loss: the auxiliary head's spaces get no gradient and no loss change
    to grow by, and they stay as they are (growth ran the graph up to the logits only, and crashed there)."""
    torch.manual_seed(0)
    path = tmp_path / "aux.onnx"
    net = _masked_export(AuxiliaryHead().eval(), path, (3, 8, 8), output_names=["aux", "logits"])
    probe = Probe(ClassifierView(net, "logits"), torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,)))
    assert grow_neurons(probe, count=2).details["spaces"] == 1
    assert grow_feature_maps(probe, count=1, candidates=2).details["spaces"] == 1
    widths = {name: net.tensor(f"{name}.weight").shape[0] for name in ("conv", "fc1", "a1", "a2")}
    assert widths == {"conv": 9, "fc1": 14, "a1": 6, "a2": 10}
    _assert_emitted_matches(net, probe.x)


class TokenMLP(torch.nn.Module):
    """A transformer's MLP on [N, L, C] tokens (both layers MatMuls over the last axis), then the mean over
    tokens and a classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(torch.relu(self.fc1(x))).mean(1))


def test_grow_neurons_bridges_token_positions_of_sequence_layers(tmp_path) -> None:
    """Layers on sequences pair each token's inputs with the same token's gradients (and, across the mean
    before the head, with the gradient of the sample's mean): with one bridged pair per neuron, each new
    neuron connects the pair with the largest |B| of a float64 reference, with psi * omega against B's sign."""
    torch.manual_seed(0)
    module = TokenMLP().eval()
    path = tmp_path / "tokens.onnx"
    torch.onnx.export(module, (torch.randn(2, 5, 8),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    x, y = torch.randn(64, 5, 8), torch.randint(0, 4, (64,))
    reference = module.double()
    hidden = torch.relu(reference.fc1(x.double()))
    mixed = reference.fc2(hidden)
    logits = reference.head(mixed.mean(1))
    mixed.retain_grad()
    logits.retain_grad()
    torch.nn.functional.cross_entropy(logits, y).backward()
    bridges = [x.double().reshape(-1, 8).T @ mixed.grad.reshape(-1, 8), hidden.detach().mean(1).T @ logits.grad]
    net = load_network(path)
    ensure_masks(net)
    assert grow_neurons(Probe(ClassifierView(net), x, y), count=1, beta=1e-6).modified
    for bridge, producer, reader in zip(bridges, layers(net), layers(net)[1:], strict=False):
        psi = net.tensor(producer.weight).detach().movedim(producer.out_axis, 0)[-1]
        omega = net.tensor(reader.weight).detach().movedim(reader.in_axis, 0)[-1]
        i, j = divmod(int(bridge.abs().argmax()), bridge.shape[1])
        assert torch.nonzero(psi).flatten().tolist() == [i] and torch.nonzero(omega).flatten().tolist() == [j]
        assert float(psi[i] * omega[j]) * float(bridge[i, j]) < 0, "one descent step on the bridged connection"
    _assert_emitted_matches(net, x)


def test_grow_feature_maps_adds_maps_through_flatten(images) -> None:
    probe = _probe("lenet-5", images, width=0.3, density=0.5)
    net = probe.view.net
    conv_widths = [net.tensor(layer.weight).shape[0] for layer in layers(net) if layer.node.op_type == "Conv"]
    fc_inputs = net.tensor(layers(net)[2].weight).shape[1]
    result = grow_feature_maps(probe, count=2, candidates=3)
    assert result.modified
    after = [net.tensor(layer.weight).shape[0] for layer in layers(net) if layer.node.op_type == "Conv"]
    assert after == [w + 2 for w in conv_widths]
    assert net.tensor(layers(net)[2].weight).shape[1] == fc_inputs + 2 * 16, "each map feeds a 4x4 block"
    assert analyse_channels(net) is not None
    _assert_emitted_matches(net, images[0])


def test_grow_feature_maps_widens_a_residual_stream_in_every_convolution_that_writes_it(tmp_path) -> None:
    """The skip Adds tie the stem's and both blocks' last convolutions' outputs into one space: a new map there is
    a new row in each of them (old rows unchanged, the new one connected), a new column in every layer that reads
    the stream, and an entry of each BatchNormalization beside them, and onnxruntime computes what the network
    does."""
    net = load_network(models.export(models.build("Residual"), tmp_path / "residual.onnx", "legacy", keep_bn=True))
    ensure_masks(net)
    before = {layer.weight: net.tensor(layer.weight).detach().clone() for layer in layers(net)}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, *models.Residual.INPUT, generator=generator)
    assert grow_feature_maps(Probe(ClassifierView(net), x, torch.randint(10, (64,), generator=generator)),
                             count=1, candidates=2).modified
    for name in ("stem.weight", "b1_conv2.weight", "b2_conv2.weight"):
        weight = net.tensor(name).detach()
        assert weight.shape[0] == 9, f"{name} writes the stream"
        torch.testing.assert_close(weight[:8, :before[name].shape[1]], before[name])
        assert bool(weight[8].any()), f"the new map has input kernels in {name}"
    for name in ("b1_conv1.weight", "b2_conv1.weight", "fc.weight"):
        weight = net.tensor(name).detach()
        assert weight.shape[1] == 9 and bool(weight[:, 8].any()), f"{name} reads the new map"
    _assert_emitted_matches(net, x)


def test_every_grown_feature_map_is_connected_on_both_sides(images) -> None:
    """A sparse seed's first convolution has 25 weights per map: at 5 % density a random draw often holds none,
    and a map without inputs (or readers) is dead from birth."""
    probe = _probe("lenet-5", images, width=0.3, density=0.05)
    net = probe.view.net
    convs = [layer for layer in layers(net) if layer.node.op_type == "Conv"]
    widths = [net.tensor(layer.weight).shape[0] for layer in convs]
    assert grow_feature_maps(probe, count=4, candidates=1).modified
    readers = [convs[1], layers(net)[2]]
    for conv, reader, width in zip(convs, readers, widths, strict=True):
        rows = net.mask(conv.weight)[width:].flatten(1).sum(1)
        columns = net.mask(reader.weight).movedim(1, 0).reshape(net.tensor(conv.weight).shape[0], -1)[width:].sum(1)
        assert bool((rows > 0).all()) and bool((columns > 0).all()), (rows, columns)


@pytest.mark.parametrize("arch", ["lenet-5", "resnet18"])
def test_probe_loss_from_a_node_is_the_full_loss_after_later_weights_change(arch: str) -> None:
    """Growth scores candidates by a loss that reuses the values before the first changed layer; it must
    equal a full forward pass exactly, also where residual connections cross the cut."""
    torch.manual_seed(0)
    net = Network(build_seed(arch, width_ratio=0.125, density=0.3))
    ensure_masks(net)
    (x,) = sample_inputs(net, batch=24)
    probe = Probe(ClassifierView(net), x, torch.randint(0, 10, (24,)), batch_size=10)
    for layer in layers(net)[::3]:
        start = next(i for i, node in enumerate(net.nodes) if layer.weight in node.inputs)
        score = probe.loss_from(start)
        net.set_tensor(layer.weight, net.tensor(layer.weight).detach() * 0.5)
        assert score() == probe.mean_loss()


class Upsampling(torch.nn.Module):
    """A strided convolution, a transposed convolution that doubles the resolution again, a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.up = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.conv, self.fc = torch.nn.Conv2d(6, 5, 3, padding=1), torch.nn.Linear(5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(torch.relu(self.down(x))))
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_grow_feature_maps_in_transposed_convolutions(tmp_path, images) -> None:
    """A transposed convolution's maps grow like a convolution's: its weight is [C_in, C_out, kh, kw], so
    new maps are columns there and rows of the next convolution's input axis; old entries stay."""
    torch.manual_seed(0)
    path = tmp_path / "up.onnx"
    net = _masked_export(Upsampling().eval(), path, (1, 28, 28))
    old = net.tensor("up.weight").detach().clone()
    assert grow_feature_maps(Probe(ClassifierView(net), images[0][:64], images[1][:64]), count=1, candidates=2).modified
    assert tuple(net.tensor("up.weight").shape) == (9, 7, 2, 2) and net.tensor("up.bias").shape[0] == 7
    assert tuple(net.tensor("conv.weight").shape) == (6, 7, 3, 3)
    torch.testing.assert_close(net.tensor("up.weight").detach()[:8, :6], old, rtol=0, atol=0)
    assert bool(net.tensor("up.weight").detach()[:, 6].any()), "the new map has input kernels"
    _assert_emitted_matches(net, images[0])


def test_grown_feature_maps_round_widths_up_to_multiples(images) -> None:
    """With ``round_to`` 4, a space that grows past 4 maps ends at a multiple of 4 (fast runtime kernels):
    LeNet-5 at width 0.3 has 6 and 15 maps; 2 more each would be 8 and 17, so the second gets 5."""
    probe = _probe("lenet-5", images, width=0.3, density=0.5)
    net = probe.view.net
    convs = [layer for layer in layers(net) if layer.node.op_type == "Conv"]
    assert [net.tensor(layer.weight).shape[0] for layer in convs] == [6, 15]
    result = grow_feature_maps(probe, count=2, candidates=2, round_to=4)
    assert [net.tensor(layer.weight).shape[0] for layer in convs] == [8, 20]
    assert result.details["grown"] == 2 + 5
    _assert_emitted_matches(net, images[0])


def test_partial_area_masks_inputs_and_is_emitted_exactly(images) -> None:
    probe = _probe("lenet-5", images, width=0.5, density=1.0)
    net = probe.view.net
    before = model_stats(net)
    result = partial_area(probe, gamma=0.2)
    assert result.modified
    masks = [n for n in net.nodes if n.name.endswith("/partial_area")]
    assert len(masks) == 2
    after = model_stats(net)
    assert after.nonzero_macs < before.nonzero_macs
    assert after.params == before.params
    _assert_emitted_matches(net, images[0])
    partial_area(probe, gamma=0.2)
    assert len([n for n in net.nodes if n.name.endswith("/partial_area")]) == 2, "masks are reused, not stacked"
    _assert_emitted_matches(net, images[0])


@pytest.mark.parametrize("model", ["grouped_net", "inverted_net"])
def test_partial_area_masks_grouped_and_depthwise_convolutions(request, images, model: str) -> None:
    """Grouped and depthwise convolutions get input masks too: a group's rows weigh only its own channels."""
    net = request.getfixturevalue(model)
    node = next(n for n in net.nodes if n.op_type == "Conv" and int(n.attr("group", 1)) > 1)
    before = {layer.node: layer.nonzero_macs for layer in model_stats(net).layers}
    assert partial_area(Probe(ClassifierView(net), images[0][:64], images[1][:64]), gamma=0.2).modified
    assert net.nodes[net.producer[node.inputs[0]]].name.endswith("/partial_area")
    after = {layer.node: layer.nonzero_macs for layer in model_stats(net).layers}
    assert after[node.name] < before[node.name]
    _assert_emitted_matches(net, images[0])



# Each pass's formula against an independent float64 reference computed here, not by the pass's own code.


def _mlp_reference(net: Network, x: torch.Tensor, y: torch.Tensor) -> tuple[list, list, list]:
    """An MLP seed's Gemm layers recomputed in float64 from its tensors: per layer, in graph order, the dense
    gradient of the mean cross-entropy w.r.t. the effective weight ``w * mask`` ([out, in]), the layer's input
    activations H and the gradient G w.r.t. its output."""
    gemms = layers(net)
    h = x.double().flatten(1)
    weights, inputs, outputs = [], [], []
    for k, layer in enumerate(gemms):
        w = (net.tensor(layer.weight).detach() * net.mask(layer.weight)).double().requires_grad_()
        out = h @ w.T + net.tensor(layer.node.inputs[2]).detach().double()
        out.retain_grad()
        weights.append(w)
        inputs.append(h.detach())
        outputs.append(out)
        h = torch.relu(out) if k < len(gemms) - 1 else out
    torch.nn.functional.cross_entropy(h, y).backward()
    return [w.grad for w in weights], inputs, [out.grad for out in outputs]


def test_grown_connections_are_the_dormant_ones_with_the_largest_float64_gradient(images) -> None:
    """Per layer, the ``ratio`` x active dormant connections with the largest |dL/dw| of a float64 reference
    become active, at -lr * dL/dw."""
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    reference, _, _ = _mlp_reference(net, *images)
    before = {layer.weight: net.mask(layer.weight).clone() for layer in layers(net)}
    grads, _ = effective_gradients(probe)
    assert grow_connections(net, grads, ratio=0.1, lr=0.1).modified
    for layer, grad in zip(layers(net), reference, strict=True):
        old = before[layer.weight]
        dormant = old == 0
        scores = torch.where(dormant, grad.abs(), torch.full_like(grad, -1.0)).flatten()
        expected = torch.zeros(old.numel(), dtype=torch.bool)
        expected[torch.topk(scores, int(0.1 * int(old.sum()))).indices] = True
        grown = (net.mask(layer.weight) > old).flatten()
        assert torch.equal(grown, expected), layer.weight
        weight = net.tensor(layer.weight).detach().double().flatten()
        torch.testing.assert_close(weight[grown], -0.1 * grad.flatten()[grown], rtol=1e-4, atol=1e-10)


def test_grown_neurons_follow_the_bridging_gradient_formula(images) -> None:
    """Each new neuron of a hidden space bridges the top ceil(beta C_in C_out) pairs of a float64 bridging
    gradient B = H^T G (pairs of earlier neurons of the step excluded): psi_i = eps sgn(-B_ij) sqrt|B_ij|,
    omega_j = eps sqrt|B_ij| (a row or column in several pairs takes its strongest), rescaled to alpha times
    the mean non-zero magnitude the layer had before growth. Only the bridged connections are active."""
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    _, inputs, outputs = _mlp_reference(net, *images)
    gemms = layers(net)
    widths = [net.tensor(layer.weight).shape[0] for layer in gemms]
    means = []
    for layer in gemms:
        weight = (net.tensor(layer.weight).detach() * net.mask(layer.weight)).double()
        means.append(float(weight[weight != 0].abs().mean()))
    count, beta, alpha = 3, 0.002, 0.5
    assert grow_neurons(probe, count, beta, alpha).details["spaces"] == 2
    for k in (0, 1):  # the hidden spaces written by fc1 and fc2
        producer, reader = gemms[k], gemms[k + 1]
        bridge = inputs[k].T @ outputs[k + 1]
        c_in, c_out = bridge.shape
        remaining = bridge.abs().flatten().clone()
        for unit in range(widths[k], widths[k] + count):
            chosen = torch.topk(remaining, math.ceil(beta * c_in * c_out)).indices
            remaining[chosen] = 0
            p, o = torch.zeros(c_in, dtype=torch.float64), torch.zeros(c_out, dtype=torch.float64)
            for index in reversed(chosen.tolist()):  # the strongest pair of a row or column is written last
                i, j = divmod(index, c_out)
                p[i], o[j] = -torch.sign(bridge[i, j]) * bridge[i, j].abs().sqrt(), bridge[i, j].abs().sqrt()
            psi = net.tensor(producer.weight).detach().double()[unit]
            omega = net.tensor(reader.weight).detach().double()[:, unit]
            eps = float(torch.sign(omega[omega != 0][0]))
            expected_psi = eps * alpha * means[k] * p / p[p != 0].abs().mean()
            expected_omega = eps * alpha * means[k + 1] * o / o[o != 0].abs().mean()
            # entries for this step's new neurons of the neighbouring space stay zero
            pad = torch.nn.functional.pad
            torch.testing.assert_close(psi, pad(expected_psi, (0, len(psi) - c_in)), rtol=1e-4, atol=0)
            torch.testing.assert_close(omega, pad(expected_omega, (0, len(omega) - c_out)), rtol=1e-4, atol=0)
            assert torch.equal(net.mask(producer.weight)[unit] > 0, psi != 0)
            assert torch.equal(net.mask(reader.weight)[:, unit] > 0, omega != 0)


def _prune_graph() -> Network:
    """x[8] -> MatMul w1 (30 % zeros) -> BatchNormalization -> Relu -> MatMul w2 -> y."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(size=(8, 6)) * (rng.uniform(size=(8, 6)) > 0.3)
    weights = {"w1": w1, "w2": rng.normal(size=(6, 4)), "gamma": rng.uniform(-2, 2, 6), "beta": rng.uniform(-1, 1, 6),
               "mean": rng.uniform(-1, 1, 6), "var": rng.uniform(0.1, 3, 6)}
    nodes = [onnx.helper.make_node("MatMul", ["x", "w1"], ["z"]),
             onnx.helper.make_node("BatchNormalization", ["z", "gamma", "beta", "mean", "var"], ["h"], epsilon=1e-3),
             onnx.helper.make_node("Relu", ["h"], ["r"]), onnx.helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes, "prune", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    net = Network(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    ensure_masks(net)
    return net


@pytest.mark.parametrize("layer_fraction", [1.0, 0.2])
def test_pruned_connections_are_the_smallest_normalised_effective_magnitudes(layer_fraction: float) -> None:
    """The pruned connections are the ``fraction`` x active with the smallest effective magnitude (|w| times
    the following BN's |gamma| / sqrt(var + eps)) over the layer's mean, ranked globally, a layer giving up
    at most ``max_layer_fraction`` of its active connections (its smallest)."""
    net = _prune_graph()
    gain = net.tensor("gamma").detach().double().abs() / torch.sqrt(net.tensor("var").detach().double() + 1e-3)
    active = {name: net.mask(name) > 0 for name in ("w1", "w2")}
    scores = {"w1": net.tensor("w1").detach().double().abs() * gain, "w2": net.tensor("w2").detach().double().abs()}
    scores = {name: score / score[active[name]].mean() for name, score in scores.items()}
    total = sum(int(a.sum()) for a in active.values())
    threshold = torch.cat([scores[name][active[name]] for name in scores]).sort().values[int(0.3 * total) - 1]
    assert prune_connections(net, 0.3, max_layer_fraction=layer_fraction, min_per_unit=0).modified
    for name, score in scores.items():
        count = min(int(((score <= threshold) & active[name]).sum()), int(layer_fraction * int(active[name].sum())))
        ranked = torch.where(active[name], score, torch.full_like(score, math.inf)).flatten()
        expected = torch.zeros(score.numel(), dtype=torch.bool)
        expected[torch.topk(ranked, count, largest=False).indices] = True
        assert torch.equal((active[name] & (net.mask(name) == 0)).flatten(), expected), name
        assert bool((net.tensor(name)[net.mask(name) == 0] == 0).all()), "pruned weights are zeroed"


def test_pruned_units_have_the_smallest_float64_fan_in_times_fan_out(images) -> None:
    """A hidden neuron's score is sum_i |W_l[u, i]| x sum_j |W_l+1[j, u]|, over its space's mean; the lowest
    ``fraction`` of all live units lose every connection (no space more than half)."""
    probe = _probe("lenet-300-100", images)
    net = probe.view.net
    gemms = layers(net)
    effective = [(net.tensor(layer.weight).detach() * net.mask(layer.weight)).double().abs() for layer in gemms]
    scores = [effective[k].sum(1) * effective[k + 1].sum(0) for k in (0, 1)]
    scores = [torch.where(s > 0, s / s[s > 0].mean(), torch.full_like(s, math.inf)) for s in scores]
    live = torch.cat(scores)
    threshold = live[torch.isfinite(live)].sort().values[int(0.2 * int(torch.isfinite(live).sum())) - 1]
    assert prune_units(net, 0.2, images[0][:8]).modified
    for k, score in enumerate(scores):
        cap = int(0.5 * int(torch.isfinite(score).sum()))
        expected = torch.zeros(len(score), dtype=torch.bool)
        expected[torch.topk(score, min(int((score <= threshold).sum()), cap), largest=False).indices] = True
        assert torch.equal(net.mask(gemms[k].weight).sum(1) == 0, expected | (effective[k].sum(1) == 0))
        assert bool((net.mask(gemms[k + 1].weight)[:, expected] == 0).all()), "a pruned unit loses its readers too"


class TwoConvolutions(torch.nn.Module):
    """A padded convolution, a grouped one (2 groups) without padding, global mean, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 6, 3, groups=2)
        self.fc = torch.nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def test_partial_area_masks_the_positions_of_least_float64_contribution(tmp_path, images) -> None:
    """Each convolution's mask drops the ceil(gamma x positions) input positions with the smallest
    sum_c mean|I[c, h, w]| x sum_{o,k} |K[o, c, k]| (a grouped convolution's channel weighed by its own group's
    rows), I from a float64 run of the module."""
    torch.manual_seed(0)
    module = TwoConvolutions().eval()
    path = tmp_path / "convs.onnx"
    net = _masked_export(module, path, (1, 28, 28))
    x, y = images[0][:64], images[1][:64]
    reference = module.double()
    sources = [x.double(), torch.relu(reference.conv1(x.double())).detach()]
    kernels = [reference.conv1.weight.detach().abs().sum((0, 2, 3)),
               torch.cat([reference.conv2.weight.detach()[3 * g:3 * g + 3].abs().sum((0, 2, 3)) for g in (0, 1)])]
    gamma = 0.1
    assert partial_area(Probe(ClassifierView(net), x, y), gamma=gamma).modified
    for name, source, kernel in zip(("conv1", "conv2"), sources, kernels, strict=True):
        score = (source.abs().mean(0) * kernel.reshape(-1, 1, 1)).sum(0).flatten()
        node = next(n for n in net.nodes if n.op_type == "Conv" and n.inputs[1] == f"{name}.weight")
        masked = net.tensor(net.nodes[net.producer[node.inputs[0]]].inputs[1]).detach().flatten() == 0
        assert int(masked.sum()) == math.ceil(gamma * len(score))
        assert float(score[masked].max()) <= float(score[~masked].min()) * (1 + 1e-6), name


class OneConvolution(torch.nn.Module):
    """One convolution space, read by the classifier after the global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_grown_feature_map_is_the_candidate_of_lowest_float64_loss(tmp_path, images, monkeypatch) -> None:
    """Of the random kernel sets drawn for a new map, the one kept has the lowest loss of the module extended
    by each of them and run in float64."""
    torch.manual_seed(0)
    module = OneConvolution().eval()
    path = tmp_path / "conv.onnx"
    net = _masked_export(module, path, (1, 28, 28))
    draws = []

    def recorded(*args, **kwargs):
        draws.append(draw(*args, **kwargs))
        return draws[-1]

    draw = grow_feature_maps_module._random_slice
    monkeypatch.setattr(grow_feature_maps_module, "_random_slice", recorded)
    x, y = images[0][:128], images[1][:128]
    assert grow_feature_maps(Probe(ClassifierView(net), x, y), count=1, candidates=6, seed=3).modified
    losses = []
    reference = module.double().requires_grad_(False)
    for kernels, columns in zip(draws[::2], draws[1::2], strict=True):  # members: the conv's rows, the fc's columns
        weight = torch.cat([reference.conv.weight, kernels.double()])
        bias = torch.cat([reference.conv.bias, torch.zeros(1, dtype=torch.float64)])  # a grown map's bias is 0
        maps = torch.relu(torch.nn.functional.conv2d(x.double(), weight, bias)).mean((2, 3))
        logits = maps @ torch.cat([reference.fc.weight, columns.double().T], 1).T + reference.fc.bias
        losses.append(float(torch.nn.functional.cross_entropy(logits, y)))
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(losses) == 6 and len(set(losses)) == 6
    torch.testing.assert_close(net.tensor("conv.weight").detach()[4:], draws[2 * best], rtol=0, atol=0)
    torch.testing.assert_close(net.tensor("fc.weight").detach()[:, 4:], draws[2 * best + 1].T, rtol=0, atol=0)
