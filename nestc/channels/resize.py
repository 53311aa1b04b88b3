"""Applying a resize plan: remove and append units of channel spaces in every member at once.

This is the one place where tensors change width. Pruning passes call it with units to drop,
growth passes with units to append; shape constants (Reshape targets, Split sizes, Slice bounds,
depthwise ``group``) are rewritten by the fix-ups the channel rules registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nestc.channels.analysis import ChannelAnalysis
from nestc.channels.layout import Layout
from nestc.errors import PassError
from nestc.ir.network import Network


@dataclass(frozen=True)
class SpaceChange:
    """New content of one space: the surviving old units in order, then ``add`` new ones."""

    keep: tuple[int, ...]
    add: int = 0


class ResizePlan:
    """Maps each layout to the old positions its new positions come from (-1 for new units)."""

    def __init__(self, analysis: ChannelAnalysis, changes: dict[int, SpaceChange]) -> None:
        self.analysis = analysis
        self.changes = {analysis.table.find(s): c for s, c in changes.items()}

    def positions(self, layout: Layout) -> list[int]:
        """For each new position along an axis with ``layout``, the old position (-1 = grown)."""
        table = self.analysis.table
        result: list[int] = []
        offset = 0
        for seg in table.normalise(layout):  # fix-ups hold layouts from before spaces were split
            change = self.changes.get(table.find(seg.space))
            units = range(seg.start, seg.stop) if change is None else [
                u for u in change.keep if seg.start <= u < seg.stop]
            for unit in units:
                base = offset + (unit - seg.start) * seg.block
                result.extend(range(base, base + seg.block))
            if change is not None and change.add:
                if not table.is_full(seg):
                    raise PassError(f"cannot grow space '{table.get(seg.space).origin}': part of it is split")
                result.extend([-1] * (change.add * seg.block))
            offset += seg.size
        return result

    def new_size(self, layout: Layout) -> int:
        """Positions ``layout`` covers after the resize."""
        return len(self.positions(layout))

    def touches(self, layout: Layout) -> bool:
        """True when ``layout`` holds units of a changed space."""
        return any(s.space in self.changes for s in self.analysis.table.normalise(layout))


NARROW_WIDTH = 4
"""Widths up to this many units are left as they are by :func:`aligned_width`, whatever the rounding."""


def aligned_width(width: int, round_to: int) -> int:
    """The smallest width at or above ``width`` that runtimes run at full speed: a multiple of ``round_to`` once
    it is above :data:`NARROW_WIDTH`.

    A layer of a few units costs little however it is laid out. Wider ones are not free below the runtime's
    vector block: onnxruntime (x86) runs a convolution in its blocked NCHWc layout when its input width is a
    multiple of the block (16 with AVX-512, 8 with AVX2); a narrower input is read through a direct path whose
    cost grows with the width, so that a 12-channel input to a 1x1 convolution took 2.4x as long as a 16-channel
    one (``docs/schedule.md``, ``round_to``)."""
    if round_to <= 1 or width <= NARROW_WIDTH:
        return width
    return -(-width // round_to) * round_to


def take_positions(tensor: torch.Tensor, axis: int, positions: list[int], fill: float) -> torch.Tensor:
    """Gather ``positions`` along ``axis``; ``-1`` entries become ``fill``."""
    index = torch.tensor(positions, dtype=torch.long, device=tensor.device)
    padded = torch.cat([tensor, torch.full_like(tensor.narrow(axis, 0, 1), fill)], dim=axis)
    return padded.index_select(axis, torch.where(index < 0, tensor.shape[axis], index))


def apply_resize(net: Network, analysis: ChannelAnalysis, changes: dict[int, SpaceChange]) -> ResizePlan:
    """Resize spaces of ``net`` in place; the analysis is stale afterwards (widths changed)."""
    plan = ResizePlan(analysis, changes)
    for root in plan.changes:
        if analysis.table.spaces[root].frozen:
            raise PassError(f"space '{analysis.table.spaces[root].origin}' is frozen: "
                            f"{analysis.table.spaces[root].frozen_by[0]}")
    seen: set[tuple[str, int]] = set()
    for member in analysis.members:
        key = (member.tensor, member.axis)
        if key in seen or not plan.touches(member.layout):
            continue
        seen.add(key)
        positions = plan.positions(member.layout)
        mask = net.mask(member.tensor)
        net.set_tensor(member.tensor, take_positions(net.tensor(member.tensor).detach(), member.axis, positions,
                                                     member.fill))
        if mask is not None:
            net.set_mask(member.tensor, take_positions(mask, member.axis, positions, 1.0))
    for fixup in analysis.fixups:
        fixup(plan.new_size)
    for root, change in plan.changes.items():
        analysis.table.spaces[root].width = len(change.keep) + change.add
    return plan
