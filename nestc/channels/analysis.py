"""Channel-space analysis: which tensor axes of a ``Network`` must keep the same width.

Each op handler's ``channel_rule`` (see :mod:`nestc.channels.rules`) states how its inputs' layouts
map to its outputs and which weight axes are members of which space. Ops without a rule freeze
every space they touch, as do graph inputs and outputs: nestc never resizes what it cannot follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from onnx import helper

from nestc.channels.layout import Layout, Member, Segment, SpaceTable, layout_size
from nestc.ir.network import Network
from nestc.ir.registry import Node

Fixup = Callable[[Callable[[Layout], int]], None]
"""Called after a resize with a function giving a layout's new size; rewrites shape constants."""


@dataclass
class ChannelAnalysis:
    """The result: spaces, their members, activation layouts and shape-constant fix-ups."""

    table: SpaceTable
    members: list[Member]
    layouts: dict[tuple[str, int], Layout]
    fixups: list[Fixup]
    member_nodes: list[str]

    def space_members(self, space: int) -> list[tuple[Member, str]]:
        """Members (with the name of the node that declared them) touching ``space``."""
        root = self.table.find(space)
        return [(m, n) for m, n in zip(self.members, self.member_nodes, strict=True)
                if any(self.table.find(s.space) == root for s in m.layout)]

    def resizable_spaces(self) -> list[int]:
        """Representatives of the spaces nestc may change, in creation order."""
        roots = sorted({self.table.find(s.index) for s in self.table.spaces})
        return [r for r in roots if not self.table.spaces[r].frozen and not self.table.spaces[r].parts]


class RuleContext:
    """What a channel rule sees of the graph while the analysis walks it."""

    def __init__(self, net: Network, shapes: dict[str, tuple[int, ...]]) -> None:
        self.net = net
        self.shapes = shapes
        self.table = SpaceTable()
        self.layouts: dict[tuple[str, int], Layout] = {}
        self.members: list[Member] = []
        self.member_nodes: list[str] = []
        self.fixups: list[Fixup] = []
        self.current: Node | None = None

    @property
    def node(self) -> Node:
        """The node whose channel rule is running (rules run only inside :func:`analyse_channels`'s walk)."""
        assert self.current is not None, "a channel rule ran outside the node walk"
        return self.current

    # ------------------------------------------------------------------------------------ queries
    def shape(self, tensor: str) -> tuple[int, ...]:
        """Static shape of ``tensor`` for the analysis sample (batch first)."""
        return self.shapes[tensor]

    def rank(self, tensor: str) -> int:
        """Number of axes of ``tensor``."""
        return len(self.shapes[tensor])

    def is_initializer(self, tensor: str) -> bool:
        """True for initializers (weights and constants), false for activations."""
        return self.net.has_tensor(tensor)

    def int_values(self, tensor: str) -> list[int] | None:
        """Values of an integer initializer (shape constants), or ``None``."""
        if tensor and tensor in self.net.ints:
            return [int(v) for v in self.net.ints[tensor].reshape(-1).tolist()]
        return None

    def layout(self, tensor: str, axis: int) -> Layout | None:
        """The layout of an activation axis, with representatives resolved; ``None`` if untracked."""
        found = self.layouts.get((tensor, axis % max(self.rank(tensor), 1)))
        return None if found is None else self.table.normalise(found)

    def input_layout(self, tensor: str, axis: int, reason: str) -> Layout:
        """Like :meth:`layout`, but an untracked axis gets a new frozen space (inputs nestc cannot resize)."""
        found = self.layout(tensor, axis)
        if found is not None:
            return found
        width = self.shape(tensor)[axis]
        layout = (Segment(self.table.new(width, f"{tensor}:{axis}", reason), 0, width),)
        self.set_layout(tensor, axis, layout)
        return layout

    # ------------------------------------------------------------------------------------ updates
    def set_layout(self, tensor: str, axis: int, layout: Layout | None) -> None:
        """Record where units sit along an output axis."""
        if layout is not None and tensor:
            self.layouts[(tensor, axis % max(self.rank(tensor), 1))] = layout

    def new_space(self, width: int, origin: str) -> Layout:
        """A fresh space covering a whole axis of ``width`` positions."""
        return (Segment(self.table.new(width, origin), 0, width),)

    def tie(self, layouts: list[Layout]) -> Layout:
        """Declare that ``layouts`` must stay equal; incompatible ones are frozen instead."""
        first = layouts[0]
        for other in layouts[1:]:
            if not self._unify(first, other):
                self.table.freeze(first, f"{self.where()}: layouts cannot be joined")
                self.table.freeze(other, f"{self.where()}: layouts cannot be joined")
        return self.table.normalise(first)

    def _unify(self, a: Layout, b: Layout) -> bool:
        """Merge spaces so that ``a`` and ``b`` hold the same units at every position; False when they cannot.

        Both must consist of whole spaces. Where one layout has a segment boundary inside the other's
        segment (a grouped convolution reads one producer's channels as equal groups), that segment's
        space is split at the boundary first (:meth:`SpaceTable.split`).
        """
        a, b = self.table.normalise(a), self.table.normalise(b)
        if a == b:
            return True
        if layout_size(a) != layout_size(b) or not all(self.table.is_full(seg) for seg in a + b):
            return False
        left, right = list(a), list(b)
        while left and right:
            x, y = left[0], right[0]
            if x.block != y.block:
                return False
            if x.size != y.size:
                wider, narrower = (x, y) if x.size > y.size else (y, x)
                self.table.split(wider.space, [narrower.stop, wider.stop - narrower.stop])
                left, right = list(self.table.normalise(tuple(left))), list(self.table.normalise(tuple(right)))
                continue
            self.table.union(x.space, y.space)
            left, right = list(self.table.normalise(tuple(left[1:]))), list(self.table.normalise(tuple(right[1:])))
        return not left and not right

    def member(self, tensor: str, axis: int, layout: Layout, fill: float = 0.0, role: str = "param") -> None:
        """Declare that initializer ``tensor`` holds ``layout``'s units along ``axis``; a tensor computed at run
        time (a bias built by ``Expand``) cannot be resized, so its units are frozen instead."""
        if not self.is_initializer(tensor):
            self.table.freeze(layout, f"{self.where()}: {tensor} is computed at run time")
            return
        if layout_size(layout) != self.net.tensor(tensor).shape[axis]:
            self.table.freeze(layout, f"{self.where()}: {tensor} axis {axis} does not match")
            return
        self.members.append(Member(tensor, axis, layout, fill, role))
        self.member_nodes.append(self.current.name if self.current else "")

    def freeze(self, layout: Layout | None, why: str) -> None:
        """Forbid resizing the spaces of ``layout``."""
        self.table.freeze(layout, f"{self.where()}: {why}")

    def freeze_node_inputs(self, why: str) -> None:
        """Freeze every tracked axis of the current node's activation inputs."""
        for name in self.node.inputs:
            if name and name in self.shapes and not self.is_initializer(name):
                for axis in range(self.rank(name)):
                    self.freeze(self.layout(name, axis), why)

    def fixup(self, fn: Fixup) -> None:
        """Register a shape-constant rewrite to run after every resize."""
        self.fixups.append(fn)

    def where(self) -> str:
        """The current node, for freeze reasons."""
        return self.current.describe() if self.current else "graph boundary"


def analyse_channels(net: Network, sample: torch.Tensor | None = None) -> ChannelAnalysis:
    """Walk ``net`` in topological order applying each handler's channel rule.

    Args:
        net: the network.
        sample: a batch for the first input, used to learn static shapes (default: seeded random, batch 2).
    """
    batch = 2 if sample is None else len(sample)
    ctx = RuleContext(net, net.tensor_shapes(*sample_inputs(net, sample, batch)))
    for name in net.input_names:
        if ctx.rank(name) >= 2:
            ctx.input_layout(name, 1, f"graph input '{name}'")
    from nestc.channels.rules import CHANNEL_RULES

    for node in net.nodes:
        ctx.current = node
        rule = CHANNEL_RULES.get(node.op_type)
        if rule is None:
            ctx.freeze_node_inputs("no channel rule for this op")
            continue
        rule(ctx)
    ctx.current = None
    for name in net.output_names:
        if name in ctx.shapes:
            for axis in range(ctx.rank(name)):
                ctx.freeze(ctx.layout(name, axis), f"graph output '{name}'")
    for member in ctx.members:  # layouts recorded before a space was split or merged: in final terms
        member.layout = ctx.table.normalise(member.layout)
        if member.tensor in net.output_names:  # a weight the graph also returns keeps its shape as well
            ctx.freeze(member.layout, f"graph output '{member.tensor}'")
    layouts = {key: ctx.table.normalise(layout) for key, layout in ctx.layouts.items()}
    return ChannelAnalysis(ctx.table, ctx.members, layouts, ctx.fixups, ctx.member_nodes)


OPEN_EXTENT = 32
"""Size given to an input dimension the file leaves open (other than the batch). Exports with a free
height and width are common; at the batch size (1 or 2) such a CNN's poolings had nothing left to pool,
while 32 (CIFAR's side) passes the usual downsampling."""


def sample_inputs(net: Network, sample: torch.Tensor | None = None, batch: int = 2) -> list[torch.Tensor]:
    """Inputs for analysis: ``sample`` for the first input, else seeded standard-normal floats (zeros
    for integer inputs) of the declared shapes with a free batch of ``batch`` (``OPEN_EXTENT`` for
    the other dimensions the file leaves open).

    Random rather than zero inputs matter: dead-unit detection checks that a unit's value is the same
    for every sample, which zeros would make trivially true.
    """
    generator = torch.Generator().manual_seed(0)
    by_name = {v.name: v for v in net.template.graph.input}
    tensors = []
    for index, name in enumerate(net.input_names):
        if index == 0 and sample is not None:
            tensors.append(sample.to(net.device))
            continue
        tensor_type = by_name[name].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else OPEN_EXTENT for d in tensor_type.shape.dim]
        if dims:
            dims[0] = batch
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        value = torch.from_numpy(np.zeros(dims, dtype=dtype))
        if value.is_floating_point():
            value = torch.randn(dims, generator=generator).to(value.dtype)
        tensors.append(value.to(net.device))
    return tensors
