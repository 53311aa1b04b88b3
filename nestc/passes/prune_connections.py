"""``prune_connections``: magnitude pruning of connections, batch-norm aware.

Removes the active connections with the smallest *effective* magnitude: a weight's |w| times the
|gamma| / sqrt(var + eps) of the BatchNormalization its layer's output reaches along a linear,
channel-preserving path (directly, or through bias Adds, Identity and channel Concats, where the
layer's units sit at an offset), because that is the size of its contribution to what the next layer
sees. Scores are normalised by each layer's mean active score, so one global ranking serves layers of
very different scale (the paper prunes a percentile per layer; a global threshold lets layers with
more redundancy give up more, see ``docs/schedule.md`` for the rankings measured), and no layer
loses more than ``max_layer_fraction`` of its active connections in one step or drops below
``min_per_unit`` connections per output unit on average.

Guarantees: only masks change (pruned weights are zeroed); the number of active connections drops by
at most ``fraction`` of the total.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nestc.channels.analysis import sample_inputs
from nestc.ir.network import Network
from nestc.ir.registry import Node
from nestc.passes.base import Layer, PassResult, layers

Shapes = Callable[[str], tuple[int, ...]]
"""Static shape of an activation by name."""


def lazy_shapes(net: Network) -> Shapes:
    """Activation shapes, learnt by one inference pass on sample inputs the first time one is asked for.

    Only a Concat between a layer and its BatchNormalization needs them (its inputs' channel counts), so
    a model without one never pays for the pass.
    """
    found: dict[str, tuple[int, ...]] = {}

    def shape(name: str) -> tuple[int, ...]:
        if not found:
            found.update(net.tensor_shapes(*sample_inputs(net)))
        return found[name]

    return shape


def effective_magnitude(net: Network, layer: Layer, shapes: Shapes | None = None) -> torch.Tensor:
    """|w| scaled per output unit by the gain of the BatchNormalization the layer's output reaches linearly.

    Args:
        net: the network.
        layer: the layer whose weight is scored.
        shapes: activation shapes (default: :func:`lazy_shapes`); pass one to share it across layers.
    """
    weight = net.effective_weight(layer.weight).detach().abs()
    gain = batch_norm_gain(net, layer, shapes or lazy_shapes(net))
    if gain is None:
        return weight
    if layer.node.op_type == "ConvTranspose":
        # weight (C_in, C_out / g, kH, kW): input row i belongs to group i // (C_in / g), whose column j is
        # output channel (i // (C_in / g)) * C_out / g + j; one group is the plain (C_in, C_out) layout
        groups = int(layer.node.attr("group", 1))
        per_row = gain.reshape(groups, -1).repeat_interleave(weight.shape[0] // groups, dim=0)
        return weight * per_row.reshape(*per_row.shape, *[1] * (weight.dim() - 2))
    shape = [1] * weight.dim()
    shape[layer.out_axis] = -1
    return weight * gain.reshape(shape)


def output_channels(net: Network, layer: Layer) -> int:
    """Channels ``layer`` writes: a grouped ConvTranspose's weight holds one group's share of them."""
    units = net.tensor(layer.weight).shape[layer.out_axis]
    return units * int(layer.node.attr("group", 1)) if layer.node.op_type == "ConvTranspose" else units


def batch_norm_gain(net: Network, layer: Layer, shapes: Shapes) -> torch.Tensor | None:
    """|gamma| / sqrt(var + eps) for each output channel of ``layer``, or ``None`` when no BN scales it linearly.

    Follows the output while its sole reader passes channels through unchanged (:func:`channel_step`); a
    nonlinearity, a channel-mixing op, a fork or a graph output ends the search, since a BN beyond it does
    not scale all of the weight's contribution.
    """
    tensor, offset = layer.node.outputs[0], 0
    units = output_channels(net, layer)
    while True:
        reader = net.sole_reader(tensor)
        if reader is None:
            return None
        if reader.op_type == "BatchNormalization" and reader.inputs[0] == tensor:
            gain = net.tensor(reader.inputs[1]).detach().abs() / torch.sqrt(
                net.tensor(reader.inputs[4]).detach() + float(reader.attr("epsilon", 1e-5)))
            return gain[offset:offset + units] if offset + units <= len(gain) else None
        step = channel_step(net, reader, tensor, shapes)
        if step is None:
            return None
        tensor, offset = reader.outputs[0], offset + step


def channel_step(net: Network, node: Node, tensor: str, shapes: Shapes) -> int | None:
    """Where channel 0 of ``tensor`` lands on axis 1 of ``node``'s output, if ``node`` passes channels
    through linearly (a bias Add, Identity, a Concat on axis 1); ``None`` otherwise."""
    if node.op_type == "Identity":
        return 0
    if node.op_type == "Add":
        others = [name for name in node.inputs if name != tensor]
        return 0 if len(others) == 1 and net.has_tensor(others[0]) else None
    if node.op_type == "Concat" and node.inputs.count(tensor) == 1:
        if int(node.attr("axis")) % len(shapes(node.outputs[0])) != 1:
            return None
        return sum(shapes(name)[1] for name in node.inputs[:node.inputs.index(tensor)])
    return None


def prune_connections(net: Network, fraction: float, max_layer_fraction: float = 0.5,
                      min_per_unit: float = 1.0) -> PassResult:
    """Deactivate about ``fraction`` of all active connections, smallest effective magnitude first."""
    scored: list[tuple[Layer, torch.Tensor, torch.Tensor]] = []
    shapes = lazy_shapes(net)
    for layer in layers(net):
        mask = net.mask(layer.weight)
        if mask is None:
            continue
        score = effective_magnitude(net, layer, shapes)
        active = mask > 0
        mean = score[active].mean() if bool(active.any()) else torch.tensor(1.0)
        scored.append((layer, score / (mean + 1e-12), active))
    total = sum(int(a.sum()) for _, _, a in scored)
    budget = int(fraction * total)
    if budget <= 0 or not scored:
        return PassResult("prune_connections", False)
    all_scores = torch.cat([s[a].flatten().float().cpu() for _, s, a in scored])
    threshold = torch.kthvalue(all_scores, min(budget, len(all_scores))).values
    removed = 0
    for layer, score, active in scored:
        units = output_channels(net, layer)
        count = int(active.sum())
        cap = min(int(max_layer_fraction * count), max(count - int(min_per_unit * units), 0))
        candidates = active & (score <= threshold.to(score.device))
        n = min(int(candidates.sum()), cap)
        if n <= 0:
            continue
        mask_smallest(net, layer.weight, score, candidates, n)
        removed += n
    return PassResult("prune_connections", removed > 0, {"removed": removed, "active_before": total})


def mask_smallest(net: Network, weight: str, score: torch.Tensor, candidates: torch.Tensor, count: int) -> None:
    """Deactivate the ``count`` entries of ``weight`` with the lowest ``score`` among ``candidates``."""
    values = torch.where(candidates, score, torch.full_like(score, float("inf"))).flatten()
    drop = torch.topk(values, count, largest=False).indices
    mask = net.mask(weight)
    assert mask is not None, f"{weight} has no mask: callers pick masked weights"
    mask = mask.clone().flatten()
    mask[drop] = 0
    net.set_mask(weight, mask.reshape(score.shape))
