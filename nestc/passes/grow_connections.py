"""``grow_connections``: gradient-based growth of dormant connections (NeST, RigL-style).

Dormant connections are masked out, but the effective weight ``w * mask`` still receives a dense
gradient; the ones with the largest |dL/dw| would reduce the loss fastest if they existed. Per layer,
the top ``ratio`` (relative to the layer's active count) of dormant connections by accumulated |grad|
are activated. New weights start at ``-lr * grad`` (one SGD step from zero), or zero with ``lr = 0``.

Guarantees: only masks and the newly activated weights change; no active connection is touched.
"""

from __future__ import annotations

import torch

from nestc.ir.network import Network
from nestc.passes.base import PassResult, layers


def grow_connections(net: Network, grads: dict[str, torch.Tensor], ratio: float, lr: float = 0.0) -> PassResult:
    """Activate ``ratio`` x (active count) dormant connections per layer with the largest |gradient|."""
    grown = 0
    for layer in layers(net):
        mask = net.mask(layer.weight)
        grad = grads.get(layer.weight)
        if mask is None or grad is None:
            continue
        dormant = mask == 0
        n = min(int(ratio * int((mask > 0).sum())), int(dormant.sum()))
        if n <= 0:
            continue
        scores = torch.where(dormant, grad.abs(), torch.full_like(grad, -1.0)).flatten()
        chosen = torch.topk(scores, n).indices
        new_mask = mask.clone().flatten()
        new_mask[chosen] = 1
        with torch.no_grad():
            weight = net.tensor(layer.weight)
            flat = weight.view(-1)
            flat[chosen] = -lr * grad.flatten()[chosen].to(weight.dtype)
        net.set_mask(layer.weight, new_mask.reshape(mask.shape))
        grown += n
    return PassResult("grow_connections", grown > 0, {"grown": grown})
