"""Convolutions: Conv and ConvTranspose in 1-D, 2-D and 3-D, plus the padding helpers pooling shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from nestc.ir.ops.elementwise import optional, required
from nestc.ir.registry import Node, OpHandler, register

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def split_same_pads(auto_pad: str, totals: Sequence[int]) -> list[int]:
    """Split total paddings into ``[begins..., ends...]``; SAME_UPPER puts the odd cell at the end."""
    small = [t // 2 for t in totals]
    big = [t - t // 2 for t in totals]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def pads_for_auto_pad(node: Node, same_totals: Sequence[int]) -> list[int]:
    """Resolve ``auto_pad``/``pads`` to explicit ``[begins..., ends...]``.

    Args:
        node: a Conv, ConvTranspose or pooling node.
        same_totals: total padding per spatial axis that SAME_UPPER/SAME_LOWER would need.
    """
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad={auto_pad!r} is not supported; accepted: {', '.join(AUTO_PADS)}")
    n = len(same_totals)
    if auto_pad == "NOTSET":
        return list(node.attr("pads", [0] * 2 * n))
    if auto_pad == "VALID":
        return [0] * 2 * n
    return split_same_pads(auto_pad, same_totals)


def same_totals(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int]) -> list[int]:
    """Padding a forward window needs so that the output has ``ceil(size / stride)`` cells."""
    return [max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
            for n, k, s, d in zip(sizes, kernel, strides, dilations)]


def torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis begins/ends to ``F.pad`` order (last axis first, begin before end)."""
    return [p for b, e in zip(reversed(begins), reversed(ends)) for p in (b, e)]


def spatial_fn(prefix: str, n: int) -> Callable[..., torch.Tensor]:
    """``F.<prefix>{n}d`` for 1 to 3 spatial axes, a clear error otherwise."""
    if n not in (1, 2, 3):
        raise ValueError(f"{prefix} over {n} spatial axes is not supported; accepted: 1, 2 or 3")
    return getattr(F, f"{prefix}{n}d")


def _geometry(node: Node, x: torch.Tensor) -> tuple[int, list[int], list[int], int]:
    n = x.dim() - 2
    return n, list(node.attr("strides", [1] * n)), list(node.attr("dilations", [1] * n)), node.attr("group", 1)


@register
class Conv(OpHandler):
    op_type = "Conv"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, w, b = required(inputs, 0), required(inputs, 1), optional(inputs, 2)
        n, strides, dilations, group = _geometry(node, x)
        pads = pads_for_auto_pad(node, same_totals(x.shape[2:], w.shape[2:], strides, dilations))
        begins, ends = pads[:n], pads[n:]
        if begins != ends:  # torch pads symmetrically only
            x = F.pad(x, torch_pads(begins, ends))
            begins = [0] * n
        return [spatial_fn("conv", n)(x, w, b, strides, begins, dilations, group)]

    def macs(self, node: Node, in_shapes: list[tuple[int, ...] | None], out_shapes: list[tuple[int, ...] | None],
             weights: list[torch.Tensor | None]) -> int:
        """Every output cell costs ``C_in / group * prod(kernel)`` MACs."""
        if out_shapes[0] is None or in_shapes[1] is None:
            return 0
        return math.prod(out_shapes[0][1:]) * math.prod(in_shapes[1][1:])


@register
class ConvTranspose(OpHandler):
    op_type = "ConvTranspose"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, w, b = required(inputs, 0), required(inputs, 1), optional(inputs, 2)
        n, strides, dilations, group = _geometry(node, x)
        extra = list(node.attr("output_padding", [0] * n))
        sizes = x.shape[2:]
        # Length of the full (unpadded) transposed convolution along each axis.
        full = [s * (i - 1) + o + (k - 1) * d + 1
                for i, k, s, d, o in zip(sizes, w.shape[2:], strides, dilations, extra)]
        auto_pad = node.attr("auto_pad", "NOTSET")
        output_shape = node.attr("output_shape")
        if output_shape is not None:
            output_shape = list(output_shape)[-n:]
            totals = [f - o for f, o in zip(full, output_shape)]
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                pads = split_same_pads(auto_pad, totals)
            else:  # explicit begins (default 0) and whatever end makes the requested size
                begins = list(node.attr("pads", [0] * 2 * n))[:n]
                pads = begins + [t - p for t, p in zip(totals, begins)]
        else:
            pads = pads_for_auto_pad(node, [f - i * s for f, i, s in zip(full, sizes, strides)])
        begins, ends = pads[:n], pads[n:]
        fn = spatial_fn("conv_transpose", n)
        if begins == ends and all(p >= 0 for p in begins) and all(
                o < max(s, d) for o, s, d in zip(extra, strides, dilations)):
            return [fn(x, w, b, strides, begins, extra, group, dilations)]
        # General case (asymmetric, negative or large paddings): full output, then crop/extend.
        y = fn(x, w, None, strides, 0, 0, group, dilations)
        y = F.pad(y, torch_pads([-p for p in begins], [o - p for o, p in zip(extra, ends)]))
        return [y if b is None else y + b.reshape(1, -1, *[1] * n)]

    def macs(self, node: Node, in_shapes: list[tuple[int, ...] | None], out_shapes: list[tuple[int, ...] | None],
             weights: list[torch.Tensor | None]) -> int:
        """Every input cell is scattered through ``C_out / group * prod(kernel)`` weights."""
        if in_shapes[0] is None or in_shapes[1] is None:
            return 0
        return math.prod(in_shapes[0][1:]) * math.prod(in_shapes[1][1:])
