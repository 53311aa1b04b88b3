"""``prune_units``: magnitude pruning of whole neurons and feature maps.

Connection pruning leaves most units alive with a few connections each, so the compacted layers stay
wide and a dense runtime such as onnxruntime gains little speed. This pass removes the units that
carry the least signal: a unit's score is the effective magnitude of its incoming weights (scaled by
a following BatchNormalization's gain, as in connection pruning) times the magnitude of its outgoing
weights, normalised by the mean score of its space so that one ranking serves every space. The
chosen units lose all incoming and outgoing connections, which makes them dead, and ``compact``
then deletes them from every tensor that holds them.

It acts on every resizable space that layers write and read (``unit_spaces.prunable_spaces``):
hidden layers, spaces read through flattening or concatenation, residual streams (a unit is removed
from the stem, every block's last convolution and every reader at once) and channels gated by
squeeze-excitation.

Guarantees: only masks change; no space loses more than ``max_space_fraction`` of its live units
in one call, and every space keeps at least one live unit.
"""

from __future__ import annotations

import torch

from nestc.channels.analysis import ChannelAnalysis, analyse_channels
from nestc.channels.layout import Member, unit_positions
from nestc.ir.network import Network
from nestc.passes.base import PassResult
from nestc.passes.prune_connections import Shapes, effective_magnitude, lazy_shapes
from nestc.passes.unit_spaces import PrunableSpace, prunable_spaces


def prune_units(net: Network, fraction: float, sample: torch.Tensor, max_space_fraction: float = 0.5) -> PassResult:
    """Disconnect about ``fraction`` of all live hidden units, lowest normalised score first."""
    if fraction <= 0:
        return PassResult("prune_units", False)
    analysis = analyse_channels(net, sample[:2])
    spaces = prunable_spaces(net, analysis)
    scored: list[tuple[PrunableSpace, torch.Tensor]] = []
    shapes = lazy_shapes(net)  # one inference pass at most, shared by every space
    for space in spaces:
        score = unit_scores(net, analysis, space, shapes)
        live = score > 0
        if int(live.sum()) > 1:
            scored.append((space, torch.where(live, score / score[live].mean(), torch.full_like(score, float("inf")))))
    total = sum(int(torch.isfinite(s).sum()) for _, s in scored)
    budget = int(fraction * total)
    if budget <= 0:
        return PassResult("prune_units", False)
    threshold = torch.kthvalue(torch.cat([s[torch.isfinite(s)] for _, s in scored]), budget).values
    removed = 0
    for space, score in scored:
        n_live = int(torch.isfinite(score).sum())
        cap = min(int(max_space_fraction * n_live), n_live - 1)
        n = min(int((score <= threshold).sum()), cap)
        if n <= 0:
            continue
        units = set(torch.topk(score, n, largest=False).indices.tolist())
        for _, member in [*space.producers, *space.readers]:
            disconnect(net, analysis, member, space.space, units)
        removed += n
    return PassResult("prune_units", removed > 0, {"removed": removed, "live_before": total})


def unit_scores(net: Network, analysis: ChannelAnalysis, space: PrunableSpace,
                shapes: Shapes | None = None) -> torch.Tensor:
    """Per unit of ``space``: incoming effective magnitude (summed over its producers) times outgoing
    magnitude (summed over its readers); 0 for dead units. ``shapes``: see :func:`effective_magnitude`.

    A :class:`PrunableSpace` has at least one producer and one reader; the sums start from a zero tensor so
    that they are tensors by type as well."""
    shapes = shapes or lazy_shapes(net)
    zero = torch.zeros(())
    incoming = sum((_per_unit(effective_magnitude(net, layer, shapes), analysis, member, space.space)
                    for layer, member in space.producers), start=zero)
    outgoing = sum((_per_unit(net.effective_weight(layer.weight).detach().abs(), analysis, member, space.space)
                    for layer, member in space.readers), start=zero)
    return incoming * outgoing


def _per_unit(magnitude: torch.Tensor, analysis: ChannelAnalysis, member: Member, space: int) -> torch.Tensor:
    width = analysis.table.spaces[space].width
    along = magnitude.movedim(member.axis, 0).reshape(magnitude.shape[member.axis], -1).sum(1).float().cpu()
    return torch.stack([along[unit_positions(analysis.table, member.layout, space, {unit})].sum()
                        for unit in range(width)])


def disconnect(net: Network, analysis: ChannelAnalysis, member: Member, space: int, units: set[int]) -> None:
    """Mask every connection of ``member`` that belongs to ``units`` (their weights become zero)."""
    mask = net.mask(member.tensor)
    if mask is None:
        return
    positions = torch.tensor(unit_positions(analysis.table, member.layout, space, units), dtype=torch.long)
    moved = mask.clone().movedim(member.axis, 0)
    moved[positions.to(mask.device)] = 0
    net.set_mask(member.tensor, moved.movedim(0, member.axis))
