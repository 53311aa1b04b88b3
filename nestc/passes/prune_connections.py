"""``prune_connections``: magnitude pruning of connections, batch-norm aware.

Removes the active connections with the smallest *effective* magnitude: a weight's |w| times the
|gamma| / sqrt(var + eps) of a BatchNormalization that directly follows its layer, because that is
the size of its contribution to what the next layer sees. Scores are normalised by each layer's mean
active score, so one global ranking serves layers of very different scale, and no layer loses more
than ``max_layer_fraction`` of its active connections in one step or drops below ``min_per_unit``
connections per output unit on average.

Guarantees: only masks change (pruned weights are zeroed); the number of active connections drops by
at most ``fraction`` of the total.
"""

from __future__ import annotations

import torch

from nestc.ir.network import Network
from nestc.passes.base import Layer, PassResult, layers


def effective_magnitude(net: Network, layer: Layer) -> torch.Tensor:
    """|w| scaled by a directly following BatchNormalization's per-channel gain."""
    weight = net.effective_weight(layer.weight).detach().abs()
    for node in net.nodes:
        if node.op_type == "BatchNormalization" and node.inputs[0] == layer.node.outputs[0]:
            gamma = net.tensor(node.inputs[1]).detach()
            var = net.tensor(node.inputs[4]).detach()
            gain = gamma.abs() / torch.sqrt(var + float(node.attr("epsilon", 1e-5)))
            shape = [1] * weight.dim()
            shape[layer.out_axis] = -1
            return weight * gain.reshape(shape)
    return weight


def prune_connections(net: Network, fraction: float, max_layer_fraction: float = 0.5,
                      min_per_unit: float = 1.0) -> PassResult:
    """Deactivate about ``fraction`` of all active connections, smallest effective magnitude first."""
    scored: list[tuple[Layer, torch.Tensor, torch.Tensor]] = []
    for layer in layers(net):
        mask = net.mask(layer.weight)
        if mask is None:
            continue
        score = effective_magnitude(net, layer)
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
        units = net.tensor(layer.weight).shape[layer.out_axis]
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
    mask = net.mask(weight).clone().flatten()
    mask[drop] = 0
    net.set_mask(weight, mask.reshape(score.shape))
