"""Channel rules, one per op family, and :data:`CHANNEL_RULES`, the table from op type to rule.

A rule reads its node's input layouts from the :class:`~nestc.channels.analysis.RuleContext`,
declares weight members, ties layouts that must stay equal and sets its output layouts. The
comment on each rule states the identity it relies on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from nestc.channels.layout import Layout, layout_size, scale_blocks, sub_layout

if TYPE_CHECKING:
    from nestc.channels.analysis import RuleContext
    from nestc.ir.registry import Node

ChannelRule = Callable[["RuleContext"], None]


def no_channels(ctx: RuleContext) -> None:
    """Ops with no float activation inputs (Constant) or whose output width adapts (Shape)."""


def elementwise(ctx: RuleContext, fill: float = 0.0, frozen_axes: tuple[int, ...] = ()) -> None:
    """y[..., c, ...] depends on x[..., c, ...] only: every axis keeps its layout across inputs.

    Broadcast float constants with a full-size axis become members of that axis's space (``fill`` is the
    value given to grown units: 1 for scales, divisors and exponents, 0 for offsets); integer and boolean
    ones are not resized, so they freeze the axis.
    """
    node = ctx.node
    out = node.outputs[0]
    rank = ctx.rank(out)
    for axis in range(rank):
        layouts, constants, untracked, fixed = [], [], False, False
        for name in node.inputs:
            if not name or name not in ctx.shapes:
                continue
            shape = ctx.shape(name)
            local = axis - (rank - len(shape))
            if local < 0 or (shape[local] == 1 and ctx.shape(out)[axis] != 1):
                continue
            if ctx.is_initializer(name):
                if ctx.net.tensor(name).is_floating_point():
                    constants.append((name, local))
                else:
                    fixed = True
                continue
            found = ctx.layout(name, local)
            untracked |= found is None
            if found is not None:
                layouts.append(found)
        if not layouts:
            continue
        tied = ctx.tie(layouts)
        if untracked:
            ctx.freeze(tied, f"axis {axis} meets an untracked tensor")
        if fixed:
            ctx.freeze(tied, f"axis {axis} meets an integer or boolean constant")
        for name, local in constants:
            ctx.member(name, local, tied, fill=fill)
        ctx.set_layout(out, axis, tied)
        if axis in frozen_axes or axis - rank in frozen_axes:
            ctx.freeze(tied, f"reduces over axis {axis}")


def scale_like(ctx: RuleContext) -> None:
    """Mul/Div/Pow: like :func:`elementwise`, but grown units get a neutral factor (or exponent) of 1."""
    elementwise(ctx, fill=1.0)


def softmax(ctx: RuleContext) -> None:
    """Softmax normalises across its axis: a removed unit would change every other one."""
    elementwise(ctx, frozen_axes=(int(ctx.node.attr("axis", -1)),))


def batch_norm(ctx: RuleContext) -> None:
    """Per-channel affine on axis 1: scale, bias, mean and variance follow the channel.

    Also InstanceNormalization (scale and bias only): its statistics are per sample and channel.
    """
    node = ctx.node
    layout = ctx.layout(node.inputs[0], 1)
    if layout is None:
        return
    for index, fill in ((1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)):
        if index < len(node.inputs) and ctx.is_initializer(node.inputs[index]):
            ctx.member(node.inputs[index], 0, layout, fill=fill)
        elif index < len(node.inputs):
            ctx.freeze(layout, "batch-norm parameter is not a constant")
    ctx.set_layout(node.outputs[0], 1, layout)


def keep_channel_axis(ctx: RuleContext) -> None:
    """Pooling (local or global) mixes positions, never channels: axis 1 passes through."""
    ctx.set_layout(ctx.node.outputs[0], 1, ctx.layout(ctx.node.inputs[0], 1))


def transpose(ctx: RuleContext) -> None:
    """y axis i is x axis perm[i]."""
    node = ctx.node
    rank = ctx.rank(node.inputs[0])
    perm = node.attr("perm") or list(reversed(range(rank)))
    for out_axis, in_axis in enumerate(perm):
        ctx.set_layout(node.outputs[0], out_axis, ctx.layout(node.inputs[0], in_axis))


def like_first(ctx: RuleContext) -> None:
    """CastLike: y = x converted; the second input gives only an element type, never units."""
    node = ctx.node
    for axis in range(ctx.rank(node.outputs[0])):
        ctx.set_layout(node.outputs[0], axis, ctx.layout(node.inputs[0], axis))


def expand(ctx: RuleContext) -> None:
    """Expand broadcasts x to a target shape: x's axes keep their layouts, aligned from the right, and the
    target's entries at channel axes are rewritten to the new widths. An axis stretched from width 1 is
    frozen (a grown unit could not be stretched)."""
    node = ctx.node
    source, out = node.inputs[0], node.outputs[0]
    offset = ctx.rank(out) - ctx.rank(source)
    for axis in range(ctx.rank(source)):
        found = ctx.layout(source, axis)
        if ctx.shape(source)[axis] == ctx.shape(out)[axis + offset]:
            ctx.set_layout(out, axis + offset, found)
        else:
            ctx.freeze(found, "expands a channel axis")
    _target_shape_fixup(ctx, out)


def _axis_groups(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input axes with runs of output axes that hold the same elements (row-major)."""
    groups, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        ins, outs, pin, pout = [], [], 1, 1
        while True:
            if pin <= pout and i < len(in_shape):
                ins.append(i)
                pin *= in_shape[i]
                i += 1
            elif j < len(out_shape):
                outs.append(j)
                pout *= out_shape[j]
                j += 1
            else:
                break
            if pin == pout and (i == len(in_shape) or in_shape[i] != 1) and (j == len(out_shape)
                                                                               or out_shape[j] != 1):
                break
        if pin != pout:
            return None
        groups.append((ins, outs))
    return groups


def view(ctx: RuleContext) -> None:
    """Reshape/Flatten/Squeeze/Unsqueeze keep row-major order, so a channel axis merged with others maps
    to blocks of the merged axis (each unit spans the product of the axes after it), repeated once for
    every index of the axes before it. Outermost, that is NCHW's Flatten (one contiguous block per
    channel); innermost, a channels-last Flatten as tf2onnx writes it (every position holds all
    channels: one segment per position). Splitting a tracked axis, or merging two, freezes them.
    """
    node = ctx.node
    source, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = ctx.shape(source), ctx.shape(out)
    groups = _axis_groups(in_shape, out_shape)
    if groups is None:
        ctx.freeze_node_inputs("reshape that cannot be followed")
        return
    for ins, outs in groups:
        tracked = [(a, found) for a in ins if (found := ctx.layout(source, a)) is not None]
        real_outs = [a for a in outs if out_shape[a] != 1] or outs[-1:]
        if not tracked:
            continue
        axis, layout = tracked[0]
        if len(tracked) > 1 or len(real_outs) != 1:
            ctx.freeze_node_inputs("reshape splits a channel axis or merges two")
            return
        factor = math.prod(in_shape[a] for a in ins if a > axis)
        repeats = math.prod(in_shape[a] for a in ins if a < axis)
        ctx.set_layout(out, real_outs[0], scale_blocks(layout, factor) * repeats)
    if node.op_type == "Reshape":
        _target_shape_fixup(ctx, out)


def _target_shape_fixup(ctx: RuleContext, out: str) -> None:
    """Rewrite the entries of a target shape (input 1: Reshape, Expand) that give a channel axis's width.

    The target is aligned with ``out``'s last axes; 0 and -1 (Reshape's copy and infer) are left alone.
    """
    node = ctx.node
    target_name = node.inputs[1] if len(node.inputs) > 1 else ""
    target = ctx.int_values(target_name)
    if target is None:
        ctx.freeze_node_inputs("target shape is computed at run time")
        return
    offset = ctx.rank(out) - len(target)
    layouts = {a: found for a, v in enumerate(target)
               if v not in (0, -1) and (found := ctx.layout(out, a + offset)) is not None}
    net = ctx.net

    def rewrite(new_size: Callable[[Layout], int]) -> None:
        values = net.ints[node.inputs[1]].clone()
        for a, layout in layouts.items():
            values[a] = new_size(layout)
        net.set_input_constant(node, 1, values)

    if layouts:
        ctx.fixup(rewrite)


def concat(ctx: RuleContext) -> None:
    """Concatenation on axis a: the output's segments are the inputs' segments, in order."""
    node = ctx.node
    out = node.outputs[0]
    axis = int(node.attr("axis")) % ctx.rank(out)
    parts: list = []
    for name in node.inputs:
        if ctx.is_initializer(name):
            layout = ctx.new_space(ctx.shape(name)[axis], f"{name}:{axis}")
            ctx.freeze(layout, "constant concatenated with channels")
        else:
            layout = ctx.input_layout(name, axis, f"{ctx.where()}: untracked concat input")
        parts.extend(layout)
    ctx.set_layout(out, axis, tuple(parts))
    _tie_other_axes(ctx, [n for n in node.inputs if not ctx.is_initializer(n)], out, skip=axis)


def _tie_other_axes(ctx: RuleContext, inputs: list[str], out: str, skip: int) -> None:
    for axis in range(ctx.rank(out)):
        if axis == skip:
            continue
        layouts = [found for name in inputs if (found := ctx.layout(name, axis)) is not None]
        if layouts:
            ctx.set_layout(out, axis, ctx.tie(layouts))


def split(ctx: RuleContext) -> None:
    """Each output holds a contiguous range of the input's units along the split axis."""
    node = ctx.node
    source = node.inputs[0]
    axis = int(node.attr("axis", 0)) % ctx.rank(source)
    layout = ctx.layout(source, axis)
    sizes = [ctx.shape(o)[axis] for o in node.outputs]
    for out in node.outputs:
        _tie_other_axes(ctx, [source], out, skip=axis)
    if layout is None:
        return
    sizes_name = node.inputs[1] if len(node.inputs) > 1 else ""
    if not sizes_name and "split" not in node.attrs:
        ctx.freeze(layout, "equal split (num_outputs) cannot express unequal widths")
        return
    parts, offset = [], 0
    for out, size in zip(node.outputs, sizes, strict=True):
        part = sub_layout(layout, offset, offset + size)
        if part is None:
            ctx.freeze(layout, "split cuts inside a channel block")
            return
        parts.append(part)
        ctx.set_layout(out, axis, part)
        offset += size
    net = ctx.net

    def rewrite(new_size: Callable[[Layout], int]) -> None:
        new = [new_size(p) for p in parts]
        if sizes_name:
            net.set_input_constant(node, 1, torch.tensor(new, dtype=torch.int64))
        else:
            node.attrs["split"] = new

    ctx.fixup(rewrite)


def slice_(ctx: RuleContext) -> None:
    """A unit-step slice of a channel axis keeps a contiguous range of its units."""
    node = ctx.node
    source, out = node.inputs[0], node.outputs[0]
    rank = ctx.rank(source)
    names = list(node.inputs[1:5]) + [""] * (5 - len(node.inputs))
    starts, ends, axes, steps = (ctx.int_values(n) if n else None for n in names[:4])
    axes = axes if axes is not None else list(range(len(starts or [])))
    sliced = {a % rank: k for k, a in enumerate(axes)}
    for axis in range(rank):
        found = ctx.layout(source, axis)
        if found is None:
            continue
        if axis not in sliced:
            ctx.set_layout(out, axis, found)
            continue
        k = sliced[axis]
        if starts is None or ends is None or (steps and steps[k] != 1):
            ctx.freeze(found, "slice with run-time bounds or a step")
            continue
        width = ctx.shape(source)[axis]
        lo = min(max(starts[k] + width if starts[k] < 0 else starts[k], 0), width)
        part = sub_layout(found, lo, lo + ctx.shape(out)[axis])
        before = sub_layout(found, 0, lo)
        if part is None or before is None:
            ctx.freeze(found, "slice cuts inside a channel block")
            continue
        ctx.set_layout(out, axis, part)
        _slice_fixup(ctx, k, before, part)


def _slice_fixup(ctx: RuleContext, k: int, before: Layout, part: Layout) -> None:
    """Rewrite entry ``k`` of the starts (input 1) and ends (input 2) to the part's new position."""
    net, node = ctx.net, ctx.node

    def rewrite(new_size: Callable[[Layout], int]) -> None:
        starts, ends = net.ints[node.inputs[1]].clone(), net.ints[node.inputs[2]].clone()
        starts[k] = new_size(before)
        ends[k] = starts[k] + new_size(part)
        net.set_input_constant(node, 1, starts)
        net.set_input_constant(node, 2, ends)

    ctx.fixup(rewrite)


def reduce_(ctx: RuleContext) -> None:
    """Reductions keep the layouts of the axes they do not reduce; reducing a channel axis freezes it."""
    node = ctx.node
    source, out = node.inputs[0], node.outputs[0]
    rank = ctx.rank(source)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(node.attr("axis", 0))]
    else:
        axes = node.attr("axes") or ctx.int_values(node.inputs[1] if len(node.inputs) > 1 else "") or []
    reduced = {a % rank for a in axes} if axes else set(range(rank))
    keep = bool(node.attr("keepdims", 1))
    out_axis = 0
    for axis in range(rank):
        found = ctx.layout(source, axis)
        if axis in reduced:
            ctx.freeze(found, "reduces over a channel axis")
        elif found is not None:
            ctx.set_layout(out, out_axis, found)
        out_axis += 1 if (keep or axis not in reduced) else 0


def pad(ctx: RuleContext) -> None:
    """Padding spatial axes leaves channels alone; padding a channel axis freezes it."""
    node = ctx.node
    source = node.inputs[0]
    rank = ctx.rank(source)
    pads = node.attr("pads") or ctx.int_values(node.inputs[1] if len(node.inputs) > 1 else "")
    axes = ctx.int_values(node.inputs[3] if len(node.inputs) > 3 else "") or list(range(rank))
    padded = {a % rank for k, a in enumerate(axes) if pads is None or pads[k] or pads[k + len(axes)]}
    for axis in range(rank):
        found = ctx.layout(source, axis)
        if axis in padded:
            ctx.freeze(found, "pads a channel axis")
        else:
            ctx.set_layout(node.outputs[0], axis, found)


def resize(ctx: RuleContext) -> None:
    """Resize interpolates within each axis: an axis it leaves at its extent (scale 1, or its own size, over
    the whole axis) passes its units through, and a constant ``sizes`` entry for it is rewritten to the
    axis's new width (one computed at run time must read the input's own extent); an axis it resizes or crops
    freezes."""
    node = ctx.node
    source, out = node.inputs[0], node.outputs[0]
    rank = ctx.rank(source)
    axes = [int(a) % rank for a in node.attr("axes", list(range(rank)))]
    crops = node.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    sizes_name = node.inputs[3] if len(node.inputs) > 3 else ""
    sizes = ctx.int_values(sizes_name)
    own = _sizes_read_from(ctx, sizes_name, source) if sizes_name and sizes is None else 0
    passed = {}
    for axis in range(rank):
        found = ctx.layout(source, axis)
        if ctx.shape(source)[axis] != ctx.shape(out)[axis] or (crops and axis in axes):
            ctx.freeze(found, "resizes a channel axis")
        elif found is not None and sizes_name and axis in axes and sizes is None and axis >= own:
            ctx.freeze(found, "Resize to run-time sizes")
        else:
            ctx.set_layout(out, axis, found)
            if found is not None and sizes is not None and axis in axes:
                passed[axes.index(axis)] = found
    if not passed:
        return
    net = ctx.net

    def rewrite(new_size: Callable[[Layout], int]) -> None:
        values = net.ints[sizes_name].clone()
        for k, layout in passed.items():
            values[k] = new_size(layout)
        net.set_input_constant(node, 3, values)

    ctx.fixup(rewrite)


def _sizes_read_from(ctx: RuleContext, sizes: str, source: str) -> int:
    """How many leading entries of run-time Resize ``sizes`` are ``source``'s own extents, which follow its
    widths by themselves: torch's legacy exporter builds ``F.interpolate(size=...)``'s as
    ``Concat(Slice(Shape(x), [0], [k]), constants)``. 0 for sizes built any other way."""
    net = ctx.net

    def producer(name: str) -> Node | None:
        return net.nodes[net.producer[name]] if name in net.producer else None

    concat = producer(sizes)
    if concat is None or concat.op_type != "Concat" or not all(ctx.is_initializer(n) for n in concat.inputs[1:]):
        return 0
    head = producer(concat.inputs[0])
    if head is None or head.op_type != "Slice":
        return 0
    shape = producer(head.inputs[0])
    slots = [*head.inputs[1:5], "", "", ""][:4]
    starts, ends, slice_axes, steps = (ctx.int_values(n) if n else None for n in slots)
    if (shape is None or shape.op_type != "Shape" or shape.inputs[0] != source or shape.attrs or starts != [0]
            or ends is None or slice_axes not in (None, [0]) or steps not in (None, [1])):
        return 0
    return min(ends[0], ctx.rank(source))


def gemm(ctx: RuleContext) -> None:
    """Y = A B (+ C): A's feature axis meets B's input axis; Y's features are a new space."""
    node = ctx.node
    a_name, b_name = node.inputs[0], node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if node.attr("transA", 0) or not ctx.is_initializer(b_name):
        ctx.freeze_node_inputs("Gemm with a transposed or non-constant operand")
        return
    in_axis, out_axis = (1, 0) if node.attr("transB", 0) else (0, 1)
    _dense_layer(ctx, a_name, 1, b_name, in_axis, out_axis, c_name)


def matmul(ctx: RuleContext) -> None:
    """Y = X W with W a constant matrix: X's last axis meets W's rows, Y's last axis is new."""
    node = ctx.node
    x_name, w_name = node.inputs
    if not ctx.is_initializer(w_name) or ctx.is_initializer(x_name) or ctx.rank(w_name) != 2:
        ctx.freeze_node_inputs("MatMul without a constant 2-D right operand")
        return
    _dense_layer(ctx, x_name, ctx.rank(x_name) - 1, w_name, 0, 1, "")


def _dense_layer(ctx: RuleContext, x_name: str, x_axis: int, w_name: str, w_in: int, w_out: int,
                 bias: str) -> None:
    node = ctx.node
    x_layout = ctx.input_layout(x_name, x_axis, f"{ctx.where()}: untracked input")
    ctx.member(w_name, w_in, x_layout, role="consumer")
    out = node.outputs[0]
    layout = ctx.new_space(ctx.net.tensor(w_name).shape[w_out], node.name)
    ctx.member(w_name, w_out, layout, role="producer")
    if bias and ctx.is_initializer(bias):
        shape = ctx.shape(bias)
        if shape and shape[-1] == layout_size(layout) and math.prod(shape) == shape[-1]:
            ctx.member(bias, len(shape) - 1, layout, role="bias")
        elif shape and math.prod(shape) > 1:
            ctx.freeze(layout, "bias is not per output unit")
    ctx.set_layout(out, ctx.rank(out) - 1, layout)


def conv(ctx: RuleContext) -> None:
    """Conv: dense (group 1) mixes channels into a new space; depthwise keeps its input's space."""
    node = ctx.node
    x_name, w_name = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if not ctx.is_initializer(w_name):
        ctx.freeze_node_inputs("convolution with a run-time weight")
        return
    weight = ctx.net.tensor(w_name)
    group = int(node.attr("group", 1))
    in_channels = weight.shape[1] * group
    out = node.outputs[0]
    if group == 1:
        x_layout = ctx.input_layout(x_name, 1, f"{ctx.where()}: untracked input")
        ctx.member(w_name, 1, x_layout, role="consumer")
        layout = ctx.new_space(weight.shape[0], node.name)
        ctx.member(w_name, 0, layout, role="producer")
        if bias:
            ctx.member(bias, 0, layout, role="bias")
        ctx.set_layout(out, 1, layout)
    elif group == in_channels and weight.shape[1] == 1:
        _depthwise(ctx, x_name, w_name, bias, weight.shape[0] // group)
    else:
        _grouped(ctx, x_name, w_name, bias, group)


def _grouped(ctx: RuleContext, x_name: str, w_name: str, bias: str, group: int) -> None:
    """Grouped Conv: input channel ``g * m + j`` meets weight column ``j`` of group ``g``'s rows, so the
    input is ``group`` copies of one space of ``m`` units (the producer's space is split to match) and the
    output ``group`` copies of a new space of ``C_out / group`` units. Removing unit ``j`` removes
    channel ``j`` of every group: the groups stay equal, as ONNX requires, and ``group`` never changes."""
    weight = ctx.net.tensor(w_name)
    x_layout = ctx.input_layout(x_name, 1, f"{ctx.where()}: untracked input")
    within = ctx.new_space(weight.shape[1], f"{ctx.node.name}:in")
    ctx.tie([x_layout, within * group])
    ctx.member(w_name, 1, within, role="consumer")
    out = ctx.new_space(weight.shape[0] // group, ctx.node.name) * group
    ctx.member(w_name, 0, out, role="producer")
    if bias:
        ctx.member(bias, 0, out, role="bias")
    ctx.set_layout(ctx.node.outputs[0], 1, out)


def _depthwise(ctx: RuleContext, x_name: str, w_name: str, bias: str, multiplier: int) -> None:
    node = ctx.node
    x_layout = ctx.input_layout(x_name, 1, f"{ctx.where()}: untracked input")
    layout = scale_blocks(x_layout, multiplier)
    ctx.member(w_name, 0, layout)
    if bias:
        ctx.member(bias, 0, layout)
    ctx.set_layout(node.outputs[0], 1, layout)

    def rewrite(new_size: Callable[[Layout], int]) -> None:
        node.attrs["group"] = new_size(x_layout)

    ctx.fixup(rewrite)


def conv_transpose(ctx: RuleContext) -> None:
    """ConvTranspose (group 1): weight is [C_in, C_out, k...], so the roles of axes 0 and 1 swap."""
    node = ctx.node
    x_name, w_name = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if not ctx.is_initializer(w_name) or int(node.attr("group", 1)) != 1 or node.attr("output_shape"):
        ctx.freeze_node_inputs("grouped or shape-fixed transposed convolution")
        return
    x_layout = ctx.input_layout(x_name, 1, f"{ctx.where()}: untracked input")
    ctx.member(w_name, 0, x_layout, role="consumer")
    layout = ctx.new_space(ctx.net.tensor(w_name).shape[1], node.name)
    ctx.member(w_name, 1, layout, role="producer")
    if bias:
        ctx.member(bias, 0, layout, role="bias")
    ctx.set_layout(node.outputs[0], 1, layout)


CHANNEL_RULES: dict[str, ChannelRule] = {
    # channel-mixing layers: a new space per output, input axis tied to the reader's weight
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    # y[c] = f(x[c]) (and broadcast constants follow c)
    **dict.fromkeys(["Add", "Sub", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid",
                     "HardSwish", "Gelu", "Elu", "Identity", "Dropout", "Cast"], elementwise),
    **dict.fromkeys(["Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Softplus", "Softsign", "Selu",
                     "Celu", "ThresholdedRelu", "Mish", "Floor", "Ceil", "Round", "Sign"], elementwise),
    **dict.fromkeys(["Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater", "GreaterOrEqual", "LessOrEqual",
                     "And", "Or", "Xor", "Not", "Where"], elementwise),
    "Mul": scale_like, "Div": scale_like, "Pow": scale_like,
    "CastLike": like_first, "Expand": expand,
    "Softmax": softmax, "LogSoftmax": softmax,
    "BatchNormalization": batch_norm, "InstanceNormalization": batch_norm,
    **dict.fromkeys(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"], keep_channel_axis),
    **dict.fromkeys(["Flatten", "Reshape", "Squeeze", "Unsqueeze"], view),
    "Transpose": transpose, "Concat": concat, "Split": split, "Slice": slice_, "Pad": pad, "Resize": resize,
    **dict.fromkeys(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin"], reduce_),
    "Constant": no_channels, "Shape": no_channels, "ConstantOfShape": no_channels,
}
"""Op type -> channel rule. Ops missing here (Gather, ZipMap, ...) freeze every space they touch; so do LRN
(it mixes neighbouring channels) and LayerNormalization (it normalises over trailing axes together)."""
