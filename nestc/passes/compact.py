"""``compact``: delete every provably dead neuron and channel from every tensor that holds it.

Guarantees: the network computes the same function (up to float rounding of folded biases), every
resizable space keeps at least one unit, and shape constants match the new widths. Repeats until
nothing changes, because removing a unit can expose another (its only reader disappears).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nestc.channels.analysis import analyse_channels, sample_inputs
from nestc.channels.resize import apply_resize
from nestc.ir.network import Network
from nestc.passes.dead_units import apply_folds, convolution_spaces, find_dead_units, removal_plan


@dataclass
class CompactResult:
    """What compaction did: units removed per space (named by the node that creates it)."""

    removed: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """True when at least one unit was removed."""
        return any(self.removed.values())


def compact(net: Network, sample: torch.Tensor | None = None, round_to: int = 1, max_rounds: int = 20) -> CompactResult:
    """Remove dead units from ``net`` in place.

    Args:
        net: the network to shrink.
        sample: a batch for the first graph input, used to measure constant units (default: seeded
            random inputs of batch 8).
        round_to: keep every resized width of a convolution's channels above ``NARROW_WIDTH`` units a multiple of
            it (onnxruntime's blocked convolutions favour such widths; fully connected widths are left free).
        max_rounds: upper bound on remove-and-recheck rounds.
    """
    inputs = sample_inputs(net, sample, batch=8)
    result = CompactResult()
    for _ in range(max_rounds):
        analysis = analyse_channels(net, inputs[0])
        dead = find_dead_units(net, analysis, inputs)
        changes, folds = removal_plan(analysis, dead, round_to, convolution_spaces(net, analysis))
        if not changes:
            break
        for space, change in changes.items():
            origin = analysis.table.spaces[space].origin
            gone = analysis.table.spaces[space].width - len(change.keep)
            result.removed[origin] = result.removed.get(origin, 0) + gone
        apply_folds(net, folds)
        apply_resize(net, analysis, changes)
    final = analyse_channels(net, inputs[0])
    result.widths = {final.table.spaces[s].origin: final.table.spaces[s].width for s in final.resizable_spaces()}
    return result
