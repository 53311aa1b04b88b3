"""``partial_area``: partial-area convolution (NeST): fixed spatial input masks for convolutions.

A convolution C = I * K spends the same work on every input position, yet positions near the image
border or in empty regions contribute little. Each step masks, per convolution, the ``gamma`` share of
still-active input positions whose contribution sum_c |I[c, h, w]| * sum_{o,k} |K[o, c, k]| (mean over
the probe batches) is smallest. The mask is a constant ``Mul`` node inserted before the convolution,
so the emitted graph computes exactly what was trained; the FLOP saving (the paper's measure: MACs
times the active share of positions) is reported by :mod:`nestc.stats`, separately from latency.

The paper ranks positions by their contribution |C| to the convolution's output. |C| lives on output
positions while the mask is on the input (a valid convolution's output is smaller than its input), so
an input position is scored by the magnitude of every term of C it enters, before terms cancel: the
score above (exact for interior positions; a border position enters fewer outputs). The paper masks
the positions below the (100 gamma)-th percentile and repeats; masking ``gamma`` of the positions
still active is the same step, and repeated steps shrink the area geometrically.

Guarantees: only input masks change; every mask keeps at least ``min_active`` of its positions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from onnx import helper

from nestc.ir.network import Network
from nestc.passes.base import Layer, PassResult, Probe, layers

SUFFIX = "/partial_area"


def area_mask_name(conv_name: str) -> str:
    """Initializer name of the input mask of convolution ``conv_name``."""
    return f"{conv_name}{SUFFIX}.mask"


def _ensure_mask_node(net: Network, conv_index: int, spatial: tuple[int, ...]) -> str:
    conv = net.nodes[conv_index]
    mask_name = area_mask_name(conv.name)
    if net.has_tensor(mask_name):
        return mask_name
    source = conv.inputs[0]
    masked = f"{conv.name}{SUFFIX}.out"
    proto = helper.make_node("Mul", [source, mask_name], [masked], name=f"{conv.name}{SUFFIX}")
    net.insert_node(conv_index, proto, {mask_name: np.ones((1, 1, *spatial), dtype=np.float32)})
    net.replace_input(conv_index + 1, source, masked)
    return mask_name


def partial_area(probe: Probe, gamma: float = 0.01, min_active: float = 0.25) -> PassResult:
    """Mask the ``gamma`` least important active input positions of every 2-D convolution (grouped and
    depthwise ones included)."""
    net = probe.view.net
    convs = [layer for layer in layers(net) if layer.node.op_type == "Conv" and net.tensor(layer.weight).dim() == 4]
    if not convs or gamma <= 0:
        return PassResult("partial_area", False)
    shapes = net.tensor_shapes(probe.x[:2])
    for conv in convs:
        index = net.nodes.index(conv.node)
        _ensure_mask_node(net, index, shapes[conv.node.inputs[0]][2:])
    # the tapped tensors are the unmasked inputs: importance is judged on what would be seen
    sources = [net.nodes[net.producer[c.node.inputs[0]]].inputs[0] for c in convs]
    totals: dict[str, torch.Tensor] = {}
    for part in probe.batches():  # activations only: no backward pass is needed to judge positions
        for name, value in net.activations([probe.x[part]], sources).items():
            totals[name] = totals.get(name, 0) + value.abs().float().sum(0)
    masked = 0
    for conv, source in zip(convs, sources, strict=True):
        importance = totals[source] / len(probe.x)  # mean |input| per [C, H, W] position
        score = (importance * _input_channel_weight(net, conv).reshape(-1, 1, 1)).sum(0)
        mask_name = area_mask_name(conv.node.name)
        mask = net.tensor(mask_name).detach().clone()
        flat = mask.reshape(-1)
        active = flat > 0
        n = min(math.ceil(gamma * int(active.sum())), int(active.sum()) - math.ceil(min_active * flat.numel()))
        if n <= 0:
            continue
        values = torch.where(active, score.reshape(-1).to(flat.device), torch.full_like(flat, float("inf")))
        flat[torch.topk(values, n, largest=False).indices] = 0
        net.set_tensor(mask_name, mask)
        masked += n
    return PassResult("partial_area", masked > 0, {"positions_masked": masked})


def _input_channel_weight(net: Network, conv: Layer) -> torch.Tensor:
    """sum_{o,k} |K[o, c, k]| for every input channel c of ``conv``.

    A grouped convolution's weight holds one group's input channels (``[C_out, C_in / g, kh, kw]``) and
    group ``j`` reads its channels through rows ``j * C_out / g`` onwards, so the rows are summed per
    group; a dense convolution is the case of one group.
    """
    group = int(conv.node.attr("group", 1))
    kernel = net.effective_weight(conv.weight).detach().abs().sum(dim=(2, 3)).float()
    return kernel.reshape(group, -1, kernel.shape[1]).sum(1).reshape(-1)
