"""Property tests: random networks built with ``onnx.helper``, random dead units, exact compaction.

Each builder records, for every initializer axis that holds units of a channel space, where those
units sit (offset and block, as Concat, Split and Flatten place them). Planting zeroes a unit's
writers (weight rows; its bias becomes zero or a non-zero constant) or its readers (weight columns).
The test knows which planted units are removable: unused ones always; constant ones when the
constant is zero after the activation, or every reader can fold it into a bias exactly (not a padded
3x3 convolution or depthwise filter, whose border sees zeros instead of the constant). Compaction
must then remove exactly those, which the test checks initializer by initializer, and keep
onnxruntime's outputs at two batch sizes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nestc import api
from nestc.ir.network import Network
from nestc.passes.compact import compact

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SETTINGS = settings(max_examples=int(os.environ.get("NESTC_RANDOM_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@dataclass
class Member:
    """Initializer ``tensor`` holds units ``lo..hi`` of ``space`` along ``axis``, unit ``u`` at positions
    ``offset + (u - lo) * block ...`` (a Concat offsets a branch's units, a Split keeps a range of
    them, a Flatten gives each unit a block of columns)."""

    tensor: str
    axis: int
    space: int
    role: str  # "producer", "bias" (or BN shift), "bn_scale", "consumer", or "follow" (depthwise, BN statistics)
    offset: int = 0
    block: int = 1
    lo: int = 0
    hi: int = 1 << 30
    foldable: bool = True  # a reader that can fold a non-zero constant unit into its bias
    layer: str = ""  # the layer a writer belongs to (its weight's name)


@dataclass
class Space:
    width: int
    foldable: bool = True  # False when a padded depthwise filter follows the units (a constant is not uniform)
    relu: bool = True  # the unit reaches its readers through a ReLU
    frozen: bool = False


@dataclass
class Builder:
    """Accumulates nodes, initializers and the unit bookkeeping of one random network."""

    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    spaces: list[Space] = field(default_factory=list)
    parts: list[tuple[int, int, int]] = field(default_factory=list)  # (space, lo, hi) held by one Split output

    def name(self, stem: str) -> str:
        return f"{stem}{len(self.nodes)}_{len(self.inits)}"

    def space(self, width: int, relu: bool = True) -> int:
        self.spaces.append(Space(width, relu=relu))
        return len(self.spaces) - 1

    def weight(self, stem: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        name = self.name(stem)
        self.inits[name] = (self.rng.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)
        return name

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.inits[name] = value
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def read(self, tensor: str, axis: int, layout: list[tuple], reader_foldable: bool) -> None:
        """``tensor`` axis ``axis`` reads the segments ``layout``: ``(space, block)`` for all of a space's
        units or ``(space, block, lo, hi)`` for some; a negative space is a frozen input of ``-space`` units."""
        offset = 0
        for space, block, *bounds in layout:
            lo, hi = bounds or (0, self.spaces[space].width if space >= 0 else -space)
            if space >= 0:
                self.members.append(Member(tensor, axis, space, "consumer", offset, block, lo, hi, reader_foldable))
            offset += (hi - lo) * block

    # ------------------------------------------------------------------------------ layers
    def conv(self, x: str, layout: list, out: int, k: int, pad: bool, relu: bool = True,
             bn: bool = False) -> tuple[str, list]:
        """Conv (+ bias, or bias-free + inference BatchNormalization) (+ ReLU)."""
        cin = _width(self, layout)
        w = self.weight("w", (out, cin, k, k))
        space = self.space(out, relu)
        self.read(w, 1, layout, reader_foldable=not (pad and k > 1))
        attrs = {"kernel_shape": [k, k], "pads": [k // 2 if pad else 0] * 4}
        if not bn:
            b = self.const("b", (0.1 * self.rng.standard_normal(out)).astype(np.float32))
            self.members += [Member(w, 0, space, "producer", layer=w), Member(b, 0, space, "bias", layer=w)]
            y = self.node("Conv", [x, w, b], **attrs)
        else:
            stats = [self.const(n, v.astype(np.float32)) for n, v in (
                ("scale", 0.5 + self.rng.random(out)), ("shift", 0.1 * self.rng.standard_normal(out)),
                ("mean", 0.1 * self.rng.standard_normal(out)), ("var", 0.5 + self.rng.random(out)))]
            self.members += [Member(w, 0, space, "producer", layer=w), Member(stats[0], 0, space, "bn_scale", layer=w),
                             Member(stats[1], 0, space, "bias", layer=w), Member(stats[2], 0, space, "follow"),
                             Member(stats[3], 0, space, "follow")]
            y = self.node("BatchNormalization", [self.node("Conv", [x, w], **attrs), *stats])
        return (self.node("Relu", [y]) if relu else y), [(space, 1)]

    def depthwise(self, x: str, layout: list, multiplier: int) -> tuple[str, list]:
        (space, _), = layout
        c = self.spaces[space].width
        w = self.weight("dw", (c * multiplier, 1, 3, 3))
        b = self.const("db", (0.1 * self.rng.standard_normal(c * multiplier)).astype(np.float32))
        self.members += [Member(w, 0, space, "follow", block=multiplier), Member(b, 0, space, "follow",
                                                                                  block=multiplier)]
        self.spaces[space].foldable = False  # a constant through a padded 3x3 filter is not uniform
        y = self.node("Conv", [x, w, b], kernel_shape=[3, 3], pads=[1] * 4, group=c)
        return self.node("Relu", [y]), [(space, multiplier)]

    def grouped(self, x: str, layout: list, groups: int, per_group: int, k: int) -> tuple[str, list]:
        """Grouped Conv (+ bias, ReLU) over a whole space: the writer's channel ``g * m + j`` becomes unit
        ``j`` of a within-group space (one member per group), as are its output channels."""
        (source, _), = layout
        per_in = self.spaces[source].width // groups
        within = self.space(per_in, self.spaces[source].relu)
        self.split(source, [(within, per_in)] * groups)
        w = self.weight("gw", (groups * per_group, per_in, k, k))
        b = self.const("gb", (0.1 * self.rng.standard_normal(groups * per_group)).astype(np.float32))
        self.read(w, 1, [(within, 1)], reader_foldable=k == 1)
        out = self.space(per_group)
        self.members += [Member(t, 0, out, role, offset=g * per_group, hi=per_group, layer=w)
                         for g in range(groups) for t, role in ((w, "producer"), (b, "bias"))]
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], pads=[k // 2] * 4, group=groups)
        return self.node("Relu", [y]), [(out, 1)] * groups

    def split(self, source: int, parts: list[tuple[int, int]]) -> None:
        """Replace a whole space by consecutive ``(space, width)`` parts: each of its members becomes one
        member per part, at the positions that part's units hold (a grouped convolution or a Concat added
        back to its source reads a space in parts)."""
        members = [m for m in self.members if m.space == source]
        self.members = [m for m in self.members if m.space != source]
        start = 0
        for space, width in parts:
            self.members += [replace(m, space=space, offset=m.offset + start * m.block, lo=0, hi=width)
                             for m in members]
            start += width
        self.spaces[source].width = 0

    def dense(self, x: str, layout: list, out: int, style: str, act: str | None,
              frozen: bool = False) -> tuple[str, list]:
        cin = _width(self, layout)
        space = self.space(out, relu=act == "Relu")
        self.spaces[space].frozen = frozen
        if style == "matmul":
            w = self.weight("w", (cin, out))
            b = self.const("b", (0.1 * self.rng.standard_normal(out)).astype(np.float32))
            y = self.node("Add", [self.node("MatMul", [x, w]), b])
            w_in, w_out = 0, 1
        else:
            trans = int(style == "gemm_t")
            w = self.weight("w", (out, cin) if trans else (cin, out), scale=1 / np.sqrt(cin))
            b = self.const("b", (0.1 * self.rng.standard_normal(out)).astype(np.float32))
            y = self.node("Gemm", [x, w, b], transB=trans)
            w_in, w_out = (1, 0) if trans else (0, 1)
        self.read(w, w_in, layout, reader_foldable=True)
        self.members += [Member(w, w_out, space, "producer", layer=w), Member(b, 0, space, "bias", layer=w)]
        if act:
            y = self.node(act, [y])
        return y, [(space, 1)]

    def model(self, x_shape: list, y: str, y_shape: list) -> onnx.ModelProto:
        """The graph with the current (planted) weights."""
        graph = helper.make_graph(self.nodes, "random",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", *y_shape])],
                                  [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        return model


def _width(builder: Builder, layout: list) -> int:
    total = 0
    for space, block, *bounds in layout:
        lo, hi = bounds or (0, builder.spaces[space].width if space >= 0 else -space)
        total += (hi - lo) * block
    return total


def _flatten(b: Builder, x: str, layout: list, spatial: int, how: str) -> tuple[str, list]:
    """NCHW -> N x (C*H*W): each channel becomes a block of ``spatial`` columns."""
    width = _width(b, layout) * spatial
    if how == "flatten":
        y = b.node("Flatten", [x], axis=1)
    else:
        target = [0, -1] if how == "reshape0" else [-1, width]
        y = b.node("Reshape", [x, b.const("shape", np.array(target, dtype=np.int64))])
    return y, [(s, block * spatial, *bounds) for s, block, *bounds in layout]


def _head(b: Builder, x: str, layout: list, classes: int, style: str = "gemm_t") -> str:
    """Global average pool, flatten, a frozen classifier (its outputs are the graph's)."""
    pooled = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    y, _ = b.dense(pooled, layout, classes, style, None, frozen=True)
    return y


# ------------------------------------------------------------------------------------ families
Built = tuple[list, str, list]
"""(input shape without batch, output name, output shape without batch)"""


def mlp(data: st.DataObject, b: Builder) -> Built:
    d0 = data.draw(st.integers(3, 8))
    widths = data.draw(st.lists(st.integers(2, 8), min_size=1, max_size=3))
    style = data.draw(st.sampled_from(["gemm", "gemm_t", "matmul"]))
    x, layout = "x", [(-d0, 1)]
    for width in widths:
        act = data.draw(st.sampled_from(["Relu", "Tanh", None]))
        x, layout = b.dense(x, layout, width, style, act)
    y, _ = b.dense(x, layout, 3, style, None, frozen=True)
    return [d0], y, [3]


def conv_stack(data: st.DataObject, b: Builder) -> Built:
    c0, size = data.draw(st.integers(1, 3)), data.draw(st.integers(5, 8))
    x, layout, spatial = "x", [(-c0, 1)], size
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.sampled_from([1, 3]))
        pad = k == 3 and (spatial < 5 or data.draw(st.booleans()))  # keep at least 3x3 positions
        x, layout = b.conv(x, layout, data.draw(st.integers(2, 6)), k, pad, bn=data.draw(st.booleans()))
        spatial -= 0 if pad or k == 1 else 2
        if spatial >= 4 and data.draw(st.booleans()):
            x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            spatial //= 2
    if data.draw(st.booleans()):
        y = _head(b, x, layout, 3)
    else:
        flat, flat_layout = _flatten(b, x, layout, spatial * spatial,
                                     data.draw(st.sampled_from(["flatten", "reshape0", "reshape"])))
        y, _ = b.dense(flat, flat_layout, 3, "gemm_t", None, frozen=True)
    return [c0, size, size], y, [3]


def residual(data: st.DataObject, b: Builder) -> Built:
    """Blocks conv-relu-conv whose output is added to the trunk: the second conv writes the trunk's space."""
    c0, width = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 6))
    x, trunk = b.conv("x", [(-c0, 1)], width, 3, True)
    for _ in range(data.draw(st.integers(1, 2))):
        inner, inner_layout = b.conv(x, trunk, data.draw(st.integers(2, 5)), 3, True)
        before = len(b.members)
        branch, branch_layout = b.conv(inner, inner_layout, width, 3, True, relu=False)
        for member in b.members[before:]:
            if member.space == branch_layout[0][0]:
                member.space = trunk[0][0]
        b.spaces[branch_layout[0][0]].width = 0  # merged into the trunk
        x = b.node("Relu", [b.node("Add", [branch, x])])
    return [c0, 6, 6], _head(b, x, trunk, 3), [3]


def concat(data: st.DataObject, b: Builder) -> Built:
    """A stem read by two branches (whole, or split between them), concatenated, merged by a 1x1 conv."""
    c0 = data.draw(st.integers(1, 3))
    stem_width = data.draw(st.integers(3, 7))
    x, stem = b.conv("x", [(-c0, 1)], stem_width, data.draw(st.sampled_from([1, 3])), True)
    sources = [(x, 0, stem_width), (x, 0, stem_width)]
    if data.draw(st.booleans()):
        first = data.draw(st.integers(1, stem_width - 1))
        sizes = b.const("split", np.array([first, stem_width - first], dtype=np.int64))
        parts = [b.name("split_a"), b.name("split_b")]
        b.nodes.append(helper.make_node("Split", [x, sizes], parts, axis=1))
        sources = [(parts[0], 0, first), (parts[1], first, stem_width)]
        b.parts += [(stem[0][0], lo, hi) for _, lo, hi in sources]
    branches, layout = [], []
    for source, lo, hi in sources:
        part = [(stem[0][0], 1, lo, hi)]
        y, y_layout = b.conv(source, part, data.draw(st.integers(2, 5)), data.draw(st.sampled_from([1, 3])), True)
        branches.append(y)
        layout += y_layout
    if data.draw(st.booleans()):
        branches, layout = branches[::-1], layout[::-1]
    merged = b.node("Concat", branches, axis=1)
    y, y_layout = b.conv(merged, layout, data.draw(st.integers(2, 5)), 1, False)
    return [c0, 5, 5], _head(b, y, y_layout, 3), [3]


def depthwise(data: st.DataObject, b: Builder) -> Built:
    c0 = data.draw(st.integers(1, 3))
    x, stem = b.conv("x", [(-c0, 1)], data.draw(st.integers(2, 6)), 3, True)
    x, dw = b.depthwise(x, stem, data.draw(st.sampled_from([1, 2])))
    x, pw = b.conv(x, dw, data.draw(st.integers(2, 6)), 1, False)
    return [c0, 6, 6], _head(b, x, pw, 3), [3]


def concat_residual(data: st.DataObject, b: Builder) -> Built:
    """Two branches read the stem, are concatenated and added back to it (an Inception-ResNet block): the
    stem's space is split where the branches meet, its first part tied to one branch, the rest to the other."""
    c0, first, second = (data.draw(st.integers(1, 3)) for _ in range(3))
    x, stem = b.conv("x", [(-c0, 1)], first + second, 3, True)
    ya, (branch_a,) = b.conv(x, stem, first, data.draw(st.sampled_from([1, 3])), True, relu=False)
    yb, (branch_b,) = b.conv(x, stem, second, data.draw(st.sampled_from([1, 3])), True, relu=False)
    (source, _), = stem
    b.split(source, [(branch_a[0], first), (branch_b[0], second)])
    y = b.node("Relu", [b.node("Add", [b.node("Concat", [ya, yb], axis=1), x])])
    return [c0, 6, 6], _head(b, y, [branch_a, branch_b], 3), [3]


def grouped(data: st.DataObject, b: Builder) -> Built:
    """A stem read by a grouped convolution (2 or 3 groups), then a pointwise one."""
    c0, groups = data.draw(st.integers(1, 3)), data.draw(st.sampled_from([2, 3]))
    per_in = data.draw(st.integers(2, 3))  # one input channel per group is a depthwise convolution
    x, stem = b.conv("x", [(-c0, 1)], groups * per_in, 3, True, bn=data.draw(st.booleans()))
    x, inner = b.grouped(x, stem, groups, data.draw(st.integers(1, 3)), data.draw(st.sampled_from([1, 3])))
    x, pw = b.conv(x, inner, data.draw(st.integers(2, 5)), 1, False)
    return [c0, 6, 6], _head(b, x, pw, 3), [3]


FAMILIES = {"mlp": mlp, "conv_stack": conv_stack, "residual": residual, "concat": concat, "depthwise": depthwise,
            "concat_residual": concat_residual, "grouped": grouped}


# ------------------------------------------------------------------------------------ planting
def _positions(member: Member, unit: int) -> slice | None:
    if not member.lo <= unit < member.hi:
        return None
    start = member.offset + (unit - member.lo) * member.block
    return slice(start, start + member.block)


def _index(array: np.ndarray, axis: int, where: slice) -> tuple:
    return tuple(where if a == axis else slice(None) for a in range(array.ndim))


PLANTS = ["fanin_zero", "fanin_constant", "fanout", "fanin_partial", "fanout_partial"]
"""zero writers (bias 0 or a positive constant), zero readers, or only the first writer / reader; spaces
with a depthwise filter also get "gate": that filter zero, the writers untouched."""


def plant(data: st.DataObject, b: Builder) -> dict[int, set[int]]:
    """Plant dead units in random resizable spaces; returns the units compaction must remove."""
    removable: dict[int, set[int]] = {}
    candidates = [i for i, s in enumerate(b.spaces) if s.width >= 2 and not s.frozen]
    drawn = data.draw(st.lists(st.sampled_from(candidates), unique=True, max_size=3)) if candidates else []
    for space in drawn:
        info = b.spaces[space]
        units = data.draw(st.lists(st.integers(0, info.width - 1), unique=True, min_size=1, max_size=info.width - 1))
        gated = any(m.space == space and (m.role == "bn_scale" or _is_depthwise(b, m)) for m in b.members)
        how = data.draw(st.sampled_from([*PLANTS, "gate"] if gated else PLANTS))
        if how == "gate":  # zero a BN scale (and shift) or a depthwise filter only, not the writers
            removable[space] = _plant_gate(b, space, units)
            continue
        bias = float(data.draw(st.sampled_from([0.5, 1.25]))) if how == "fanin_constant" else 0.0
        roles = ("consumer",) if how.startswith("fanout") else ("producer", "bias", "bn_scale")
        chosen = [m for m in b.members if m.space == space and m.role in roles]
        if how == "fanin_partial":  # the first writing layer only
            chosen = [m for m in chosen if m.layer == chosen[0].layer]
        elif how == "fanout_partial":
            chosen = chosen[:1]
        for member in chosen if roles == ("consumer",) else []:
            held = [u for u in units if member.lo <= u < member.hi]
            if len(held) == min(member.hi, info.width) - member.lo:
                units.remove(held[0])  # a reader left with no input would make its own units constant
        for member in chosen:
            array = b.inits[member.tensor]
            for unit in units:
                where = _positions(member, unit)
                if where is not None:
                    array[_index(array, member.axis, where)] = bias if member.role == "bias" else 0.0
        if how == "fanin_constant":
            _keep_followers_positive(b, space, units)
        holders = [m for m in b.members if m.space == space and m.role in roles]
        removable[space] = {u for u in units if all(m in chosen or _positions(m, u) is None for m in holders)
                            and (how != "fanin_constant" or _foldable(b, space, u))}
    for space, lo, hi in b.parts:  # a Split output never becomes empty: its first unit stays
        if set(range(lo, hi)) <= removable.get(space, set()):
            removable[space].discard(lo)
    return removable


def _is_depthwise(b: Builder, member: Member) -> bool:
    """A depthwise filter or its bias (both follow their channel, as BN statistics do)."""
    return member.role == "follow" and member.tensor.startswith(("dw", "db"))


def _plant_gate(b: Builder, space: int, units: list[int]) -> set[int]:
    """Zero the gate of ``units``: a BN's scale and shift (the unit becomes exactly zero, removable),
    or a depthwise filter (the unit becomes the filter's bias, which every reader, all reading after
    the filter in the depthwise family, must fold)."""
    bn = [m for m in b.members if m.space == space and m.role in ("bn_scale", "bias") and
          any(n.space == space and n.role == "bn_scale" for n in b.members)]
    if bn:
        for member in bn:
            array = b.inits[member.tensor]
            for unit in units:
                array[_index(array, member.axis, _positions(member, unit))] = 0.0
        return set(units)
    for member in b.members:
        if member.space == space and _is_depthwise(b, member) and b.inits[member.tensor].ndim == 4:
            array = b.inits[member.tensor]
            for unit in units:
                array[_index(array, member.axis, _positions(member, unit))] = 0.0
    readers = [m for m in b.members if m.space == space and m.role == "consumer"]
    return {u for u in units if all(m.foldable for m in readers if _positions(m, u))}


def _foldable(b: Builder, space: int, unit: int) -> bool:
    """A non-zero constant unit can go: no depthwise filter follows it and every reader folds it."""
    readers = [m for m in b.members if m.space == space and m.role == "consumer" and _positions(m, unit)]
    return b.spaces[space].foldable and all(m.foldable for m in readers)


def _keep_followers_positive(b: Builder, space: int, units: list[int]) -> None:
    """Positive depthwise filters and biases for the planted units, so the (padded) filtered constant
    stays positive through the ReLU and visibly differs at the border: such a unit is not removable.
    (A negative sum would make it zero everywhere, and removable after all.)"""
    for member in b.members:
        if member.space == space and _is_depthwise(b, member):
            array = b.inits[member.tensor]
            for unit in units:
                where = _positions(member, unit)
                array[_index(array, member.axis, where)] = np.abs(array[_index(array, member.axis, where)]) + 0.1


def expected_shapes(b: Builder, removed: dict[int, set[int]]) -> dict[str, tuple[int, ...]]:
    """Every float initializer's shape once the ``removed`` units are gone from all their members."""
    shapes = {}
    for name, array in b.inits.items():
        if array.dtype != np.float32:
            continue
        shape = list(array.shape)
        for axis in range(array.ndim):
            gone: set[int] = set()
            for member in b.members:
                if member.tensor == name and member.axis == axis:
                    for unit in removed.get(member.space, ()):
                        where = _positions(member, unit)
                        if where is not None:
                            gone.update(range(where.start, where.stop))
            shape[axis] -= len(gone)
        shapes[name] = tuple(shape)
    return shapes


# ------------------------------------------------------------------------------------ the test
def _check_family(family: str, data: st.DataObject) -> None:
    b = Builder(np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed")))
    x_shape, y, y_shape = FAMILIES[family](data, b)
    removable = plant(data, b)
    with tempfile.TemporaryDirectory() as folder:
        path, out = Path(folder) / "in.onnx", Path(folder) / "out.onnx"
        onnx.save(b.model(x_shape, y, y_shape), str(path))
        report = api.compact(path, out)
        compacted = onnx.load(str(out))
        onnx.checker.check_model(compacted, full_check=True)
        got = {t.name: tuple(t.dims) for t in compacted.graph.initializer if t.data_type == TensorProto.FLOAT}
        assert got == expected_shapes(b, removable), report.result.removed
        for batch in (1, 5):
            x = np.random.default_rng(batch).standard_normal((batch, *x_shape)).astype(np.float32)
            models.assert_close(models.ort_run(out, x), models.ort_run(path, x))
        assert not compact(Network(compacted)).modified  # nothing removable is left behind


@pytest.mark.parametrize("family", FAMILIES)
@SETTINGS
@given(data=st.data())
def test_random_networks_compact_exactly(family: str, data: st.DataObject) -> None:
    """Every family (see its builder's docstring): in grouped networks channel ``j`` of every group goes
    or stays together, so groups stay equal and ``group`` unchanged."""
    _check_family(family, data)
