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

from collections.abc import Collection
from dataclasses import dataclass, field

import torch

from nestc.channels.analysis import ChannelAnalysis
from nestc.channels.layout import Layout, Member, unit_positions
from nestc.channels.resize import SpaceChange, aligned_width
from nestc.ir.network import CONVOLUTION_OPS, Network
from nestc.ir.registry import Node

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
        constant: units that carry a constant, with the bias folds that removing each one needs
            (removing several needs the concatenation of their folds).
    """

    unused: dict[int, list[int]] = field(default_factory=dict)
    constant: dict[int, tuple[list[int], dict[int, list[Fold]]]] = field(default_factory=dict)


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
    total = sum((unit_magnitudes(net, m, analysis, space, width) for m in members), start=torch.zeros(()))
    return (total == 0).cpu()


def _silenced_units(net: Network, analysis: ChannelAnalysis, space: int, width: int) -> torch.Tensor | None:
    """Units whose every writer is silenced: its weight row is zero (the unit is its bias), or its
    output reaches everything downstream only through a gate that multiplies the unit by zero (the
    unit is then the gate's shift). Such a unit carries a value that no input can change."""
    nodes = {n.name: n for n in net.nodes}
    writers = [(m, n) for m, n in analysis.space_members(space) if m.role == "producer"]
    if not writers:
        return None
    silenced = torch.ones(width, dtype=torch.bool)
    for member, name in writers:
        zero = unit_magnitudes(net, member, analysis, space, width).cpu() == 0
        gate = _gate(net, analysis, nodes[name], space, width)
        silenced &= zero if gate is None else zero | gate
    return silenced


_LANE_WISE = frozenset({"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Gelu",
                        "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Erf", "Abs",
                        "Neg", "Sign", "Floor", "Ceil", "Round", "Identity", "Dropout", "MaxPool", "AveragePool"})
"""Ops a unit passes through on its own lane, finite for every finite input (a gate after them still
silences it). Exp, Log, Sqrt, Reciprocal and Pow are not: an overflow or a NaN times a zero gate is
not zero."""


def _gate(net: Network, analysis: ChannelAnalysis, node: Node, space: int, width: int) -> torch.Tensor | None:
    """Units that a gate after ``node`` multiplies by zero, when that gate is the only way out.

    From ``node``'s output, follow single readers through lane-wise ops (ReLU, pooling) to a
    BatchNormalization (zero scale: the unit becomes its shift, with running or batch statistics
    alike) or a depthwise convolution (zero filter: the unit becomes its bias).
    """
    tensor = node.outputs[0]
    while True:
        reader = net.sole_reader(tensor)
        if reader is None or reader.inputs[0] != tensor:
            return None
        if reader.op_type in _LANE_WISE:
            tensor = reader.outputs[0]
            continue
        if reader.op_type == "BatchNormalization" or _is_depthwise(net, reader):
            break
        return None
    for member, name in zip(analysis.members, analysis.member_nodes, strict=True):
        if name == reader.name and member.tensor == reader.inputs[1] and member.axis == 0:
            return unit_magnitudes(net, member, analysis, space, width).cpu() == 0
    return None


def _is_depthwise(net: Network, node: Node) -> bool:
    """A Conv with one input channel per group: each channel's filter is a gate of its own (a grouped
    Conv with wider groups mixes channels and gates none)."""
    return (node.op_type == "Conv" and int(node.attr("group", 1)) > 1 and net.has_tensor(node.inputs[1])
            and net.tensor(node.inputs[1]).shape[1] == 1)


def find_dead_units(net: Network, analysis: ChannelAnalysis, sample: list[torch.Tensor]) -> DeadUnits:
    """Removable units of every resizable space, with the folds that removing them needs."""
    result = DeadUnits()
    readers: dict[int, list[tuple[Member, str]]] = {}
    constant_units: dict[int, list[int]] = {}
    for space in analysis.resizable_spaces():
        width = analysis.table.spaces[space].width
        unused = _zero_units(net, analysis, space, width, "consumer")
        constant = _silenced_units(net, analysis, space, width)
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
    """Keep the candidates that every reader sees as one constant whose effect it can fold.

    Folds are computed per unit: readers are linear in the unit (Conv, Gemm, MatMul without their
    bias), so removing any subset needs exactly the sum of its units' folds, and a ``--round-to``
    that keeps some constant units still removes the others.
    """
    nodes = {n.name: n for n in net.nodes}
    taps = {nodes[name].inputs[0] for space in constant_units for _, name in readers[space]}
    acts = net.activations(sample, taps)
    for space, units in constant_units.items():
        folds: dict[int, list[Fold]] = {u: [] for u in units}
        for member, name in readers[space]:
            node = nodes[name]
            x_name = node.inputs[0]
            found = _activation_axis(analysis, x_name, member.layout)
            for unit in list(folds):
                fold = None if found is None else _probe_fold(net, analysis, node, acts[x_name], *found, space, unit)
                if fold is None:
                    del folds[unit]
                else:
                    folds[unit].extend(fold)
        if folds:
            result.constant[space] = (sorted(folds), folds)


def _activation_axis(analysis: ChannelAnalysis, tensor: str, layout: Layout) -> tuple[int, Layout] | None:
    """The axis of ``tensor`` that a reader's weight axis with ``layout`` reads, and that axis's layout.

    They are equal, except for a grouped convolution: its weight holds one group's channels, its input
    every group's, the same layout repeated once per group.
    """
    for (name, axis), found in analysis.layouts.items():  # analyse_channels leaves every layout normalised
        if name == tensor and layout and found == layout * (len(found) // len(layout)):
            return axis, found
    return None


def _probe_fold(net: Network, analysis: ChannelAnalysis, node: Node, act: torch.Tensor, axis: int, layout: Layout,
                space: int, unit: int) -> list[Fold] | None:
    """Measure a constant unit at ``node``'s input (where ``layout`` places it) and compute its effect on
    ``node``'s output."""
    positions = unit_positions(analysis.table, layout, space, {unit})
    if not positions:
        return []
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
    out_axis = 1 if node.op_type in CONVOLUTION_OPS else delta.dim() - 1
    per_unit = delta.movedim(out_axis, 0).reshape(delta.shape[out_axis], -1)
    if bool(((per_unit.max(1).values - per_unit.min(1).values).abs() > CONSTANT_TOLERANCE
             * (1 + per_unit.abs().max(1).values)).any()):
        return None
    return _fold_into_bias(net, analysis, node, per_unit[:, 0])


def _fold_into_bias(net: Network, analysis: ChannelAnalysis, node: Node, delta: torch.Tensor) -> list[Fold] | None:
    """The fold that adds ``delta`` (per output unit) to ``node``'s output, or ``None`` when there is
    no place to put it (a tensor other nodes read too is no such place).

    Places, in order: the node's own bias (Gemm's ``C`` is scaled by ``beta``, so it gets
    ``delta / beta``); the per-unit constant of an Add that is the output's only reader; the running
    mean of a BatchNormalization that is its only reader (``BN(y + d)`` with mean ``m`` equals
    ``BN(y)`` with mean ``m - d``; with batch statistics ``d`` cancels either way).
    """
    for member, name in zip(analysis.members, analysis.member_nodes, strict=True):
        if name == node.name and member.role == "bias":
            beta = float(node.attr("beta", 1.0)) if node.op_type == "Gemm" else 1.0
            if beta == 0 or net.sole_reader(member.tensor) is None:
                return None
            return [Fold(member.tensor, member.axis, delta / beta)]
    out = node.outputs[0]
    reader = net.sole_reader(out)
    if reader is None:
        return None
    if reader.op_type == "Add":
        return _fold_into_add(net, analysis, node, reader, delta)
    if (reader.op_type == "BatchNormalization" and reader.inputs[0] == out and len(reader.inputs) > 3
            and net.has_tensor(reader.inputs[3]) and node.op_type in ("Conv", "ConvTranspose", "Gemm")
            and net.sole_reader(reader.inputs[3]) is not None):
        mean = net.tensor(reader.inputs[3])
        if mean.dim() == 1 and mean.numel() == delta.numel():
            return [Fold(reader.inputs[3], 0, -delta)]
    return None


def _fold_into_add(net: Network, analysis: ChannelAnalysis, node: Node, add: Node,
                   delta: torch.Tensor) -> list[Fold] | None:
    """An Add of ``node``'s output and a trainable constant holding one value per output unit."""
    out = node.outputs[0]
    others = [i for i in add.inputs if i != out]
    if (len(others) != 1 or not net.has_tensor(others[0]) or not net.is_trainable(others[0])
            or net.sole_reader(others[0]) is None):
        return None
    for member, name in zip(analysis.members, analysis.member_nodes, strict=True):
        if name == add.name and member.tensor == others[0] and net.tensor(member.tensor).numel() == delta.numel():
            return [Fold(member.tensor, member.axis, delta)]
    return None


def apply_folds(net: Network, folds: list[Fold]) -> None:
    """Add each fold's delta to its bias tensor (before the units it came from are removed)."""
    for fold in folds:
        bias = net.tensor(fold.tensor).detach().clone()
        shape = [1] * bias.dim()
        shape[fold.axis] = -1
        bias += fold.delta.to(bias.dtype).reshape(shape)
        net.set_tensor(fold.tensor, bias)


def removal_plan(analysis: ChannelAnalysis, dead: DeadUnits, round_to: int = 1,
                 aligned: Collection[int] = ()) -> tuple[dict[int, SpaceChange], list[Fold]]:
    """Space changes and the folds they need, keeping at least one unit and widths multiple of ``round_to``
    (see ``_allowed``) in the ``aligned`` spaces (:func:`convolution_spaces`).

    Unused units go first (they need no fold), then constant ones, as many as the width rules allow.
    No tensor may become empty: a Split or Slice part made only of dead units keeps its first one.
    """
    chosen: dict[int, list[int]] = {}
    for space in sorted(set(dead.unused) | set(dead.constant)):
        width = analysis.table.spaces[space].width
        unused = dead.unused.get(space, [])
        constant = [u for u in dead.constant.get(space, ([], {}))[0] if u not in set(unused)]
        candidates = unused + constant
        chosen[space] = candidates[: _allowed(width, len(candidates), _rounding(space, round_to, aligned))]
    _keep_parts_nonempty(analysis, chosen)
    changes: dict[int, SpaceChange] = {}
    folds: list[Fold] = []
    for space, units in chosen.items():
        width = analysis.table.spaces[space].width
        units = units[: _allowed(width, len(units), _rounding(space, round_to, aligned))]
        unused_units = set(dead.unused.get(space, []))
        unit_folds = dead.constant.get(space, ([], {}))[1]
        for unit in units:
            folds.extend([] if unit in unused_units else unit_folds.get(unit, []))
        if units:
            gone = set(units)
            changes[space] = SpaceChange(tuple(u for u in range(width) if u not in gone))
    return changes, folds


def _keep_parts_nonempty(analysis: ChannelAnalysis, chosen: dict[int, list[int]]) -> None:
    """Take back the first unit of every activation layout that the removal would leave empty."""
    table = analysis.table
    gone = {space: set(units) for space, units in chosen.items()}
    for layout in analysis.layouts.values():
        segments = table.normalise(layout)
        if any(u not in gone.get(seg.space, ()) for seg in segments for u in range(seg.start, seg.stop)):
            continue
        if not segments or segments[0].stop <= segments[0].start:
            continue
        first = segments[0]
        gone[first.space].discard(first.start)
        chosen[first.space] = [u for u in chosen[first.space] if u != first.start]


def _rounding(space: int, round_to: int, aligned: Collection[int]) -> int:
    return round_to if space in aligned else 1


def convolution_spaces(net: Network, analysis: ChannelAnalysis) -> frozenset[int]:
    """Spaces whose units lie along an axis of a convolution's weight or bias (its output or input channels, or
    a depthwise one's): onnxruntime's blocked convolutions are the kernels that care about widths. A fully
    connected layer runs as fast at any width (MLAS's GEMM), so there rounding would only keep zeros."""
    convolution_inputs = {name for node in net.nodes if node.op_type in CONVOLUTION_OPS for name in node.inputs[1:]}
    return frozenset(analysis.table.find(segment.space) for member in analysis.members
                     if member.tensor in convolution_inputs for segment in member.layout)


def _allowed(width: int, dead: int, round_to: int) -> int:
    """How many of ``dead`` units may go: at least one unit stays, and the width left is an
    :func:`~nestc.channels.resize.aligned_width` (or the width it has now)."""
    return width - min(width, aligned_width(max(width - dead, 1), round_to))


__all__ = ["DeadUnits", "Fold", "apply_folds", "convolution_spaces", "find_dead_units", "removal_plan",
           "unit_magnitudes"]
