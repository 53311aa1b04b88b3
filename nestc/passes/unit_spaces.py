"""Spaces the unit passes act on: which layers write a space and which read it.

Growth needs producing layers and readers that are layers, nothing split: neuron growth a space
written by one fully connected layer and read by fully connected layers (the bridge i -> new unit ->
j, a gradient through that one layer), feature-map growth a space written by convolutions only (grouped
ones included; a residual stream is written by the stem and by every block's last convolution, and a new
map there is a new row in each of them), and both need every member to cover the whole space, so
appended units have an unambiguous place in every tensor. Pruning whole units needs less
(:func:`prunable_spaces`): any writers and readers, since it only masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nestc.channels.analysis import ChannelAnalysis
from nestc.channels.layout import Member, unit_positions
from nestc.ir.network import CONVOLUTION_OPS, Network
from nestc.passes.base import Layer, layers

_DENSE = frozenset({"Gemm", "MatMul"})


@dataclass
class UnitSpace:
    """A growable space with its producing layers, its reading layers (each with its member), and the layer
    weights that carry each unit on its own lane in between (depthwise filters): a new unit needs those too,
    or it ends at a zero filter."""

    space: int
    producers: list[tuple[Layer, Member]]
    readers: list[tuple[Layer, Member]]
    filters: list[Member]

    @property
    def key(self) -> frozenset[str]:
        """The producers' weights: names the space across analyses, whose space numbers change with a resize."""
        return frozenset(layer.weight for layer, _ in self.producers)


def growable_spaces(net: Network, analysis: ChannelAnalysis, producer_ops: frozenset[str],
                    one_producer: bool) -> list[UnitSpace]:
    """Resizable spaces produced by layers of ``producer_ops`` (exactly one where ``one_producer``) and read only
    by layers."""
    by_weight = {layer.weight: layer for layer in layers(net)}
    found = []
    for space in analysis.resizable_spaces():
        members = analysis.space_members(space)
        if not all(analysis.table.is_full(seg) for m, _ in members for seg in m.layout
                   if analysis.table.find(seg.space) == space):
            continue
        producers = [m for m, _ in members if m.role == "producer"]
        readers = [(by_weight[m.tensor], m) for m, _ in members if m.role == "consumer" and m.tensor in by_weight]
        if not producers or (one_producer and len(producers) > 1) or not readers or any(
                m.tensor not in by_weight or by_weight[m.tensor].node.op_type not in producer_ops for m in producers):
            continue
        filters = [m for m, _ in members if m.role == "param" and m.tensor in by_weight]
        found.append(UnitSpace(space, [(by_weight[m.tensor], m) for m in producers], readers, filters))
    return found


@dataclass
class PrunableSpace:
    """A resizable space with every layer that writes it and every layer that reads it."""

    space: int
    producers: list[tuple[Layer, Member]]
    readers: list[tuple[Layer, Member]]


def prunable_spaces(net: Network, analysis: ChannelAnalysis) -> list[PrunableSpace]:
    """Resizable spaces written by layers and read by layers, however many of each.

    Pruning a unit needs less than growing one: masking every layer weight that reads it leaves it
    unread, and compaction deletes it from every tensor of its space. So a residual stream (one space
    tied across each block's last convolution, the shortcut and the stem) and a channel that a
    squeeze-excitation gate multiplies (written by the block's convolution and by the gate's) are
    candidates too, unlike for growth, which needs one producer to place a new unit.
    """
    by_weight = {layer.weight: layer for layer in layers(net)}
    found = []
    for space in analysis.resizable_spaces():
        members = [m for m, _ in analysis.space_members(space)]
        producers = [(by_weight[m.tensor], m) for m in members if m.role == "producer" and m.tensor in by_weight]
        readers = [(by_weight[m.tensor], m) for m in members if m.role == "consumer" and m.tensor in by_weight]
        if producers and readers:
            found.append(PrunableSpace(space, producers, readers))
    return found


def fc_spaces(net: Network, analysis: ChannelAnalysis) -> list[UnitSpace]:
    """Hidden neuron spaces between fully connected layers (readers fully connected, no blocks)."""
    return [s for s in growable_spaces(net, analysis, _DENSE, one_producer=True)
            if all(r.node.op_type in _DENSE and all(seg.block == 1 for seg in m.layout) for r, m in s.readers)]


def conv_spaces(net: Network, analysis: ChannelAnalysis) -> list[UnitSpace]:
    """Feature-map spaces written by convolutions or transposed convolutions (several for a residual stream).

    A grouped convolution's output space holds one map of every group per unit (its layout repeats the
    space once per group), so a grown unit is a new row at the end of each group's block and ``group``
    stays as it is, as for pruning.
    """
    return growable_spaces(net, analysis, CONVOLUTION_OPS, one_producer=False)


def write_units(net: Network, analysis: ChannelAnalysis, member: Member, space: int, units: list[int],
                values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Set the entries of ``member`` that belong to ``units`` to ``values`` (unit axis first).

    ``values`` has shape ``[len(positions), *rest]`` where positions are the member's positions of
    those units along its axis; ``mask`` (same shape) replaces the connection mask there. Both may live on
    the host while the network is on a GPU.
    """
    weight = net.tensor(member.tensor).detach().clone()
    positions = torch.tensor(unit_positions(analysis.table, member.layout, space, set(units)), dtype=torch.long,
                             device=weight.device)
    moved = weight.movedim(member.axis, 0)
    moved[positions] = values.to(device=weight.device, dtype=weight.dtype)
    net.set_tensor(member.tensor, moved.movedim(0, member.axis))
    current = net.mask(member.tensor)
    if current is not None:
        new_mask = current.clone().movedim(member.axis, 0)
        # the growth passes draw values on the host: CUDA stores only a 0-dim host value into a GPU tensor
        entries = (values != 0) if mask is None else mask
        new_mask[positions] = entries.to(device=new_mask.device, dtype=new_mask.dtype)
        net.set_mask(member.tensor, new_mask.movedim(0, member.axis))
