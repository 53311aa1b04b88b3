"""Batch normalisation for convolutions an exporter folded it out of: inserted to train, folded back to emit.

Exporting in inference mode folds every BatchNormalization into the convolution before it (PyTorch's legacy
and dynamo exporters, tf2onnx), so a network trained with normalisation arrives without it, and every fit
of the schedule then trains a deep network that was never meant to train unnormalised: the learning-rate
check settles for 0.005 or less, and retraining recovers little of what a pruning step costs. Trained with
the normalisation back, the same network prunes several times further (``docs/schedule.md``).

:func:`insert_batch_norms` puts a BatchNormalization after every Conv whose output reaches none linearly.
Its running statistics are those of the Conv's output on sample data, its scale ``sqrt(var + eps)`` and its
shift the mean, so in inference mode it is the identity and the network computes what the file computed;
in training it normalises with batch statistics, as the original training did. :func:`fold_batch_norms`
folds them back (weight scaled per output channel, bias shifted) so that the written file has the input's
graph. The inserted nodes are known by their name (``nestc.naming.INSERTED_BATCH_NORM``), which checkpoints
keep.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from nestc.ir.emit import emit_model
from nestc.ir.network import Network
from nestc.naming import INSERTED_BATCH_NORM as MARK
from nestc.naming import claim_name
from nestc.passes.base import layers
from nestc.passes.prune_connections import batch_norm_gain, lazy_shapes

EPSILON = 1e-5
SAMPLES = 256
"""Training samples whose Conv outputs give an inserted BatchNormalization its running statistics."""
CHUNK = 32
"""Samples per inference pass while measuring statistics: every Conv output of a chunk is held at once."""


def insert_batch_norms(net: Network, sample: torch.Tensor) -> tuple[Network, int]:
    """A copy of ``net`` with a BatchNormalization after every Conv that has none, and how many were inserted.

    ``sample``: inputs as the model takes them; their Conv outputs give the running statistics. ``net`` is
    returned unchanged (with 0) when no Conv lacks normalisation. The BatchNormalization inserted is opset 9's
    and later's; ``load_model`` brings every model to opset 13 or later.
    """
    shapes = lazy_shapes(net)
    convs = [layer.node for layer in layers(net) if layer.node.op_type == "Conv"
             and batch_norm_gain(net, layer, shapes) is None]
    if not convs:
        return net, 0
    statistics = _output_statistics(net, sample, [conv.outputs[0] for conv in convs])
    model = emit_model(net)
    graph = model.graph
    taken = ({t.name for t in graph.initializer} | {n.name for n in graph.node}
             | {name for n in graph.node for name in (*n.input, *n.output)} | {v.name for v in graph.input})
    wanted = {conv.outputs[0] for conv in convs}
    nodes = []
    for proto in graph.node:
        nodes.append(proto)
        output = proto.output[0] if proto.op_type == "Conv" and proto.output else None
        if output not in wanted:
            continue
        mean, var = statistics[output]
        params = {part: claim_name(f"{output}_bn_{part}", taken) for part in ("scale", "shift", "mean", "var")}
        for name, value in zip(params.values(), (torch.sqrt(var + EPSILON), mean, mean, var), strict=True):
            graph.initializer.append(numpy_helper.from_array(value.numpy().astype(np.float32), name))
        proto.output[0] = claim_name(f"{output}_before_bn", taken)  # the BatchNormalization writes the Conv's output
        nodes.append(helper.make_node("BatchNormalization", [proto.output[0], *params.values()], [output],
                                      name=claim_name(f"{proto.name or output}{MARK}", taken), epsilon=EPSILON))
    del graph.node[:]
    graph.node.extend(nodes)
    return _rebuilt(model, net), len(convs)


def statistics_sample(x_train: np.ndarray) -> torch.Tensor:
    """The ``SAMPLES`` training samples :func:`insert_batch_norms` measures: a fixed random pick (a class-sorted
    file's first images are one class), the same for every method that trains the model."""
    pick = np.sort(np.random.default_rng(0).permutation(len(x_train))[:SAMPLES])
    return torch.as_tensor(np.ascontiguousarray(x_train[pick]))


def inserted_batch_norms(net: Network) -> int:
    """How many BatchNormalizations of ``net`` :func:`insert_batch_norms` added."""
    return sum(1 for node in net.nodes if node.name.endswith(MARK))


def fold_batch_norms(net: Network) -> Network:
    """``net`` with every BatchNormalization :func:`insert_batch_norms` added folded into its Conv (``net``
    itself when it has none). In inference mode both compute the same function."""
    if not inserted_batch_norms(net):  # every run without an inserted one: no emit
        return net
    model = emit_model(net)
    graph = model.graph
    marked = [node for node in graph.node if node.op_type == "BatchNormalization" and node.name.endswith(MARK)]
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    taken = set(values) | {name for node in graph.node for name in (*node.input, *node.output)}
    for bn in marked:
        conv = producer[bn.input[0]]
        scale, shift, mean, var = (values[name] for name in bn.input[1:5])
        epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), EPSILON)
        factor = (scale / np.sqrt(var + epsilon)).astype(np.float32)
        weight = values[conv.input[1]]
        values[conv.input[1]] = weight * factor.reshape(-1, *[1] * (weight.ndim - 1))
        if len(conv.input) < 3 or not conv.input[2]:
            bias_name = claim_name(f"{conv.input[1]}_bias", taken)
            values[bias_name] = np.zeros(len(factor), dtype=np.float32)
            del conv.input[2:]
            conv.input.append(bias_name)
        bias = values[conv.input[2]]
        values[conv.input[2]] = ((bias - mean) * factor + shift).astype(bias.dtype)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        for name in bn.input[1:5]:
            values.pop(name)
    del graph.initializer[:]  # in file order, new biases last
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in values.items())
    return _rebuilt(model, net)


def _output_statistics(net: Network, sample: torch.Tensor, outputs: list[str]
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and (biased) variance of each of ``outputs`` over ``sample``, in inference mode."""
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(outputs, 0)  # values per channel: each output has its own spatial size
    for start in range(0, len(sample), CHUNK):
        found = net.activations([sample[start:start + CHUNK].to(net.device)], outputs)
        for name in outputs:
            value = found[name].detach().double()
            dims = [d for d in range(value.dim()) if d != 1]
            sums[name] = sums.get(name, 0) + value.sum(dims).cpu()
            squares[name] = squares.get(name, 0) + (value * value).sum(dims).cpu()
            counts[name] += value.numel() // value.shape[1]
    statistics = {}
    for name in outputs:
        mean = sums[name] / counts[name]
        statistics[name] = (mean.float(), (squares[name] / counts[name] - mean * mean).clamp_min(0).float())
    return statistics


def _rebuilt(model: onnx.ModelProto, like: Network) -> Network:
    """``model`` as a network on ``like``'s device and in its mode, with ``like``'s connection masks."""
    masks = {name: mask.clone() for name in like.masks if (mask := like.mask(name)) is not None}
    net = Network.with_masks(model, masks, like.device)
    net.train(like.training)
    return net
