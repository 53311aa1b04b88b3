"""Channel spaces and the layouts that place their units along tensor axes.

A *channel space* is a set of units (neurons, feature maps) whose count every member axis shares: a
Conv's output channels, the BatchNormalization after it, the residual Add that joins it, the Linear
columns that read it after a Flatten. A *layout* says where a space's units sit along one axis: a
list of segments ``(space, start, stop, block)``, each unit ``u`` of ``space[start:stop]`` occupying
``block`` consecutive positions. Concat yields several segments, Flatten multiplies the block,
Split/Slice keep a unit range.

A space can be *split* into consecutive parts once an axis turns out to hold them separately: a
grouped convolution reads its input as ``groups`` equal parts that share one within-group index, so
the producer's single space becomes ``groups`` parts, which are then merged into one space (unit
``j`` of it is channel ``j`` of every group). Layouts written before the split are read through
:meth:`SpaceTable.normalise`, which replaces a split space by its parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """Units ``start..stop`` of ``space``, each spanning ``block`` positions along the axis."""

    space: int
    start: int
    stop: int
    block: int = 1

    @property
    def size(self) -> int:
        """Positions the segment occupies along its axis."""
        return (self.stop - self.start) * self.block


Layout = tuple[Segment, ...]


@dataclass
class Member:
    """One tensor axis that holds a space's units.

    Attributes:
        tensor: ONNX name of the tensor (an initializer for weights, else an activation).
        axis: the axis along which units lie (non-negative).
        layout: where the units sit along ``axis``.
        fill: value for positions of newly grown units (1 for scales and variances, else 0).
        role: ``"producer"`` (a channel-mixing op's output axis: weight rows, bias), ``"consumer"``
            (a channel-mixing op's input axis: weight columns), or ``"param"`` (BN, bias-like and
            depthwise parameters that follow the units).
    """

    tensor: str
    axis: int
    layout: Layout
    fill: float = 0.0
    role: str = "param"


@dataclass
class Space:
    """A channel space: its width, its members, and whether nestc may resize it."""

    index: int
    width: int
    origin: str
    frozen_by: list[str] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)  # spaces it was split into, in order (empty: not split)

    @property
    def frozen(self) -> bool:
        """True when something outside nestc's understanding depends on this width."""
        return bool(self.frozen_by)


class SpaceTable:
    """Union-find over spaces: tying two axes merges their spaces (and their freeze reasons)."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self.spaces: list[Space] = []

    def new(self, width: int, origin: str, frozen_by: str | None = None) -> int:
        """Create a space of ``width`` units; ``frozen_by`` names why it may never change."""
        index = len(self.spaces)
        self._parent.append(index)
        self.spaces.append(Space(index, width, origin, [frozen_by] if frozen_by else []))
        return index

    def find(self, index: int) -> int:
        """Representative of ``index``'s group."""
        while self._parent[index] != index:
            self._parent[index] = self._parent[self._parent[index]]
            index = self._parent[index]
        return index

    def get(self, index: int) -> Space:
        """The representative ``Space`` object of ``index``'s group."""
        return self.spaces[self.find(index)]

    def union(self, a: int, b: int) -> int:
        """Merge the groups of ``a`` and ``b``; a width mismatch freezes the result."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        self._parent[rb] = ra
        sa, sb = self.spaces[ra], self.spaces[rb]
        sa.frozen_by.extend(sb.frozen_by)
        if sa.width != sb.width:
            sa.frozen_by.append(f"widths {sa.width} and {sb.width} meet")
        return ra

    def freeze(self, layout: Layout | None, reason: str) -> None:
        """Freeze every space that ``layout`` touches."""
        for seg in self.normalise(layout or ()):
            self.get(seg.space).frozen_by.append(reason)

    def split(self, index: int, widths: list[int]) -> list[int]:
        """Split ``index``'s space into consecutive parts of ``widths`` (summing to its width); returns them.

        The parts inherit its freeze reasons; the split space itself is no longer a space of the graph.
        """
        root = self.get(index)
        assert not root.parts and sum(widths) == root.width, (root, widths)
        root.parts = [self.new(width, f"{root.origin}[{k}]") for k, width in enumerate(widths)]
        for part in root.parts:
            self.spaces[part].frozen_by.extend(root.frozen_by)
        return list(root.parts)

    def normalise(self, layout: Layout) -> Layout:
        """The layout with each segment's space replaced by its representative, and split spaces by the
        matching ranges of their parts."""
        result: list[Segment] = []
        for seg in layout:
            root = self.get(seg.space)
            if not root.parts:
                result.append(Segment(root.index, seg.start, seg.stop, seg.block))
                continue
            offset = 0
            for part in root.parts:
                width = self.spaces[part].width
                lo, hi = max(seg.start, offset), min(seg.stop, offset + width)
                if lo < hi:
                    result.extend(self.normalise((Segment(part, lo - offset, hi - offset, seg.block),)))
                offset += width
        return tuple(result)

    def is_full(self, seg: Segment) -> bool:
        """True when ``seg`` covers all units of its space."""
        return seg.start == 0 and seg.stop == self.get(seg.space).width


def layout_size(layout: Layout) -> int:
    """Number of positions ``layout`` covers along its axis."""
    return sum(seg.size for seg in layout)


def scale_blocks(layout: Layout, factor: int) -> Layout:
    """Each unit spans ``factor`` times more positions (Flatten of trailing axes, depthwise multiplier)."""
    return tuple(Segment(s.space, s.start, s.stop, s.block * factor) for s in layout)


def sub_layout(layout: Layout, lo: int, hi: int) -> Layout | None:
    """The part of ``layout`` at positions ``lo..hi``; ``None`` when a cut falls inside a unit's block."""
    result: list[Segment] = []
    offset = 0
    for seg in layout:
        seg_lo, seg_hi = max(lo, offset), min(hi, offset + seg.size)
        if seg_lo < seg_hi:
            if (seg_lo - offset) % seg.block or (seg_hi - offset) % seg.block:
                return None
            first = seg.start + (seg_lo - offset) // seg.block
            result.append(Segment(seg.space, first, first + (seg_hi - seg_lo) // seg.block, seg.block))
        offset += seg.size
    return tuple(result)


def unit_positions(table: SpaceTable, layout: Layout, space: int, units: set[int] | range) -> list[int]:
    """Positions along an axis with ``layout`` that hold the given units of ``space``."""
    positions: list[int] = []
    offset = 0
    for seg in table.normalise(layout):
        if table.find(seg.space) == table.find(space):
            for unit in range(seg.start, seg.stop):
                if unit in units:
                    base = offset + (unit - seg.start) * seg.block
                    positions.extend(range(base, base + seg.block))
        offset += seg.size
    return positions
