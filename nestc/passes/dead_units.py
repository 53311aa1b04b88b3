"""Finding units whose removal provably leaves the network's function unchanged.

A unit (neuron or feature map) of a resizable channel space is removable when
1. every weight that reads it (``consumer`` members) is zero at it: nothing downstream sees it; or
2. every weight that writes it (``producer`` members) is zero at it, so it carries a constant, and
   that constant's effect on every reader can be moved into the reader's bias exactly. The constant
   is measured on a sample batch at the reader's input and accepted only when it is the same at every
   sample and position, and its effect only when it is the same at every output position (a padded
   convolution, whose border sees zeros, is therefore left alone unless the constant is zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nestc.channels.analysis import ChannelAnalysis
from nestc.channels.layout import Layout, Member, unit_positions
from nestc.channels.resize import SpaceChange
from nestc.ir.network import Network

CONSTANT_TOLERANCE = 1e-6
"""Relative spread below which a measured activation counts as constant."""


@dataclass
class Fold:
    """Add ``delta`` to bias ``tensor`` along ``axis`` (the folded constant's effect)."""

    tensor: str
    axis: int
    delta: torch.Tensor


@dataclass
class DeadUnits:
    """Removable units per space.

    Attributes:
        unused: units no weight reads; removing them needs nothing else.
        constant: units that carry a constant, with the bias folds that removing them all needs
            (the folds are joint: remove all of a space's constant units or none).
    """

    unused: dict[int, list[int]] = field(default_factory=dict)
    constant: dict[int, tuple[list[int], list[Fold]]] = field(default_factory=dict)


def unit_magnitudes(net: Network, member: Member, analysis: ChannelAnalysis, space: int,
                    width: int) -> torch.Tensor:
    """Sum of |entries| of a member tensor that belong to each unit of ``space`` (shape ``[width]``)."""
    moved = net.effective_weight(member.tensor).detach().movedim(member.axis, 0)
    per_position = moved.abs().reshape(moved.shape[0], -1).sum(1)
    result = torch.zeros(width, dtype=per_position.dtype, device=per_position.device)
    offset = 0
    for seg in member.layout:
        if analysis.table.find(seg.space) == space:
            blocks = per_position[offset: offset + seg.size].reshape(seg.stop - seg.start, seg.block).sum(1)
            result[seg.start: seg.stop] += blocks
        offset += seg.size
    return result


def _zero_units(net: Network, analysis: ChannelAnalysis, space: int, width: int, role: str) -> torch.Tensor | None:
    members = [m for m, _ in analysis.space_members(space) if m.role == role]
    if not members:
        return None
    total = sum(unit_magnitudes(net, m, analysis, space, width) for m in members)
    return (total == 0).cpu()


def find_dead_units(net: Network, analysis: ChannelAnalysis, sample: list[torch.Tensor]) -> DeadUnits:
    """Removable units of every resizable space, with the folds that removing them needs."""
    result = DeadUnits()
    readers: dict[int, list[tuple[Member, str]]] = {}
    constant_units: dict[int, list[int]] = {}
    for space in analysis.resizable_spaces():
        width = analysis.table.spaces[space].width
        unused = _zero_units(net, analysis, space, width, "consumer")
        constant = _zero_units(net, analysis, space, width, "producer")
        dead = set() if unused is None else {int(u) for u in torch.nonzero(unused).flatten()}
        if constant is not None:
            candidates = [int(u) for u in torch.nonzero(constant).flatten() if int(u) not in dead]
            if candidates:
                constant_units[space] = candidates
                readers[space] = [(m, n) for m, n in analysis.space_members(space) if m.role == "consumer"]
        if dead:
            result.unused[space] = sorted(dead)
    if constant_units:
        _fold_constants(net, analysis, sample, constant_units, readers, result)
    return result


def _fold_constants(net: Network, analysis: ChannelAnalysis, sample: list[torch.Tensor],
                    constant_units: dict[int, list[int]], readers: dict[int, list[tuple[Member, str]]],
                    result: DeadUnits) -> None:
    nodes = {n.name: n for n in net.nodes}
    taps = {nodes[name].inputs[0] for space in constant_units for _, name in readers[space]}
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(*sample, taps=taps)
    net.train(was_training)
    acts = dict(net.tapped)
    net.tapped = {}
    for space, units in constant_units.items():
        folds: list[Fold] = []
        accepted = set(units)
        for member, name in readers[space]:
            node = nodes[name]
            x_name = node.inputs[0]
            axis = _activation_axis(analysis, x_name, member.layout)
            if axis is None:
                accepted.clear()
                break
            fold = _probe_fold(net, analysis, node, member, acts[x_name], axis, space, accepted)
            if fold is None:
                accepted.clear()
                break
            folds.extend(fold)
        if accepted:
            result.constant[space] = (sorted(accepted), folds)


def _activation_axis(analysis: ChannelAnalysis, tensor: str, layout: Layout) -> int | None:
    norm = analysis.table.normalise(layout)
    for (name, axis), found in analysis.layouts.items():
        if name == tensor and analysis.table.normalise(found) == norm:
            return axis
    return None


def _probe_fold(net: Network, analysis: ChannelAnalysis, node, member: Member, act: torch.Tensor, axis: int,
                space: int, units: set[int]) -> list[Fold] | None:
    """Measure the constant units at ``node``'s input and compute their effect on its output."""
    positions = unit_positions(analysis.table, member.layout, space, units)
    values = act.movedim(axis, 0)[positions].reshape(len(positions), -1)
    spread = (values.max(1).values - values.min(1).values).abs()
    if bool((spread > CONSTANT_TOLERANCE * (1 + values.abs().max(1).values)).any()):
        return None
    probe = torch.zeros_like(act[:1]).movedim(axis, 0)
    probe[positions] = values[:, :1].reshape(-1, *([1] * (probe.dim() - 1)))
    probe = probe.movedim(0, axis)
    if not bool(probe.any()):
        return []
    handler = net.handlers[net.nodes.index(node)]
    args = [probe] + [net.effective_weight(n) if n and net.has_tensor(n) else None for n in node.inputs[1:2]]
    with torch.no_grad():
        delta = handler.forward(node, args, False)[0]
    out_axis = 1 if node.op_type in ("Conv", "ConvTranspose") else delta.dim() - 1
    per_unit = delta.movedim(out_axis, 0).reshape(delta.shape[out_axis], -1)
    if bool(((per_unit.max(1).values - per_unit.min(1).values).abs() > CONSTANT_TOLERANCE
             * (1 + per_unit.abs().max(1).values)).any()):
        return None
    bias = _bias_of(net, analysis, node)
    if bias is None:
        return None
    return [Fold(bias[0], bias[1], per_unit[:, 0])]


def _bias_of(net: Network, analysis: ChannelAnalysis, node) -> tuple[str, int] | None:
    """The per-unit bias of ``node``'s output: its own bias input, or a directly following Add's constant."""
    for member, name in zip(analysis.members, analysis.member_nodes, strict=True):
        if name == node.name and member.role == "bias":
            return member.tensor, member.axis
    out = node.outputs[0]
    for other in net.nodes:
        if other.op_type == "Add" and out in other.inputs:
            for member, name in zip(analysis.members, analysis.member_nodes, strict=True):
                if name == other.name and net.is_trainable(member.tensor):
                    return member.tensor, member.axis
    return None


def apply_folds(net: Network, folds: list[Fold]) -> None:
    """Add each fold's delta to its bias tensor (before the units it came from are removed)."""
    for fold in folds:
        bias = net.tensor(fold.tensor).detach().clone()
        shape = [1] * bias.dim()
        shape[fold.axis] = -1
        bias += fold.delta.to(bias.dtype).reshape(shape)
        net.set_tensor(fold.tensor, bias)


def removal_plan(analysis: ChannelAnalysis, dead: DeadUnits, round_to: int = 1) -> tuple[dict[int, SpaceChange],
                                                                                     list[Fold]]:
    """Space changes and the folds they need, keeping at least one unit and widths multiple of ``round_to``.

    Unused units go first; a space's constant units are removed only when all of them fit, because
    their folds were computed together.
    """
    changes: dict[int, SpaceChange] = {}
    folds: list[Fold] = []
    for space in sorted(set(dead.unused) | set(dead.constant)):
        width = analysis.table.spaces[space].width
        unused = dead.unused.get(space, [])
        constant, space_folds = dead.constant.get(space, ([], []))
        removable = _allowed(width, len(unused) + len(constant), round_to)
        if removable >= len(unused) + len(constant) and constant:
            chosen = unused + constant
            folds.extend(space_folds)
        else:
            chosen = unused[: _allowed(width, len(unused), round_to)]
        if chosen:
            gone = set(chosen)
            changes[space] = SpaceChange(tuple(u for u in range(width) if u not in gone))
    return changes, folds


def _allowed(width: int, dead: int, round_to: int) -> int:
    """How many of ``dead`` units may go: at least one unit stays, the width stays a multiple of ``round_to``."""
    target = max(width - dead, 1)
    if round_to > 1:
        target = min(width, -(-target // round_to) * round_to)
    return width - target


__all__ = ["DeadUnits", "Fold", "apply_folds", "find_dead_units", "removal_plan", "unit_magnitudes"]
