"""Model statistics for ``nestc inspect`` and reports: parameters, non-zeros and MACs per layer.

``params`` counts the elements of the tensors the IR trains (weights, biases, BN scale and shift;
BN running statistics excluded), which is what a framework's ``numel`` over parameters reports.
MACs are per sample; ``nonzero_macs`` scales a layer's MACs by its weight density, the FLOP measure
the NeST paper reports for sparse layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from nestc.channels.analysis import sample_inputs
from nestc.ir.network import Network
from nestc.naming import INSERTED_BATCH_NORM


@dataclass
class LayerStats:
    """One node that owns trainable tensors."""

    node: str
    op: str
    weight_shape: list[int]
    params: int
    nonzero_params: int
    macs: int
    nonzero_macs: int


@dataclass
class ModelStats:
    """Totals and per-layer rows (see the module docstring for what is counted)."""

    params: int = 0
    """Elements of the trainable tensors."""
    nonzero_params: int = 0
    """The non-zeros among them."""
    macs: int = 0
    """Dense multiply-accumulates per sample."""
    nonzero_macs: int = 0
    """MACs scaled by each layer's weight density and partial-area input share."""
    layers: list[LayerStats] = field(default_factory=list)
    """One row per node that owns trainable tensors or computes MACs."""

    def to_dict(self) -> dict:
        """JSON-ready form (totals at the top level, as ``nestc inspect --json`` prints)."""
        return asdict(self)


def model_stats(net: Network) -> ModelStats:
    """Count parameters, non-zeros and MACs of ``net`` for one sample."""
    shapes = net.tensor_shapes(*sample_inputs(net, batch=1))
    stats = ModelStats()
    counted: set[str] = set()
    for node, handler in zip(net.nodes, net.handlers, strict=True):
        if node.name.endswith(INSERTED_BATCH_NORM):  # folded into its Conv in every file nestc writes
            continue
        owned = [n for n in node.inputs if n and net.is_trainable(n) and n not in counted]
        weights = [net.effective_weight(n).detach() if n and net.has_tensor(n) else None for n in node.inputs]
        macs = handler.macs(node, [shapes.get(n) for n in node.inputs], [shapes.get(n) for n in node.outputs],
                            weights)
        if not owned and not macs:
            continue
        counted.update(owned)
        params = sum(net.tensor(n).numel() for n in owned)
        nonzero = sum(int(torch.count_nonzero(net.effective_weight(n))) for n in owned)
        main = next((w for w in weights[1:2] + weights[:1] if w is not None and w.dim() >= 2), None)
        density = 1.0 if main is None or main.numel() == 0 else int(torch.count_nonzero(main)) / main.numel()
        density *= _input_area(net, node)
        shape = list(net.tensor(owned[0]).shape) if owned else []
        layer = LayerStats(node.name, node.op_type, shape, params, nonzero, int(macs), round(macs * density))
        stats.layers.append(layer)
    stats.params = sum(layer.params for layer in stats.layers)
    stats.nonzero_params = sum(layer.nonzero_params for layer in stats.layers)
    stats.macs = sum(layer.macs for layer in stats.layers)
    stats.nonzero_macs = sum(layer.nonzero_macs for layer in stats.layers)
    return stats


def _input_area(net: Network, node) -> float:
    """Active share of a convolution's input positions under a constant 0/1 spatial mask (partial-area
    convolution); 1 when its input is not masked that way."""
    if node.op_type != "Conv" or node.inputs[0] not in net.producer:
        return 1.0
    source = net.nodes[net.producer[node.inputs[0]]]
    if source.op_type != "Mul":
        return 1.0
    for name in source.inputs:
        if net.has_tensor(name) and not net.is_trainable(name):
            mask = net.tensor(name)
            if mask.dim() >= 3 and mask.shape[0] == mask.shape[1] == 1 and bool(((mask == 0) | (mask == 1)).all()):
                return float(mask.float().mean())
    return 1.0


def format_table(stats: ModelStats) -> str:
    """A fixed-width text table of ``stats`` with a totals line."""
    header = f"{'node':<28} {'op':<18} {'weight shape':<18} {'params':>10} {'non-zero':>10} {'MACs':>12}"
    lines = [header, "-" * len(header)]
    for layer in stats.layers:
        shape = "x".join(map(str, layer.weight_shape)) or "-"
        lines.append(f"{layer.node[:28]:<28} {layer.op:<18} {shape:<18} {layer.params:>10,} "
                     f"{layer.nonzero_params:>10,} {layer.macs:>12,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<28} {'':<18} {'':<18} {stats.params:>10,} {stats.nonzero_params:>10,} {stats.macs:>12,}")
    return "\n".join(lines)
