"""Reductions: ReduceMean and ArgMax."""

from __future__ import annotations

import torch

from nestc.ir.ops.elementwise import required
from nestc.ir.ops.shape import ints_from
from nestc.ir.registry import Node, OpHandler, register


@register
class ReduceMean(OpHandler):
    """ReduceMean; ``axes`` is an attribute before opset 18 and an optional input from 18."""

    op_type = "ReduceMean"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axes = ints_from(node, inputs, 1, "axes") or []
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        keepdims = bool(node.attr("keepdims", 1))
        if x.is_floating_point():
            return [x.mean(dim=axes, keepdim=keepdims)]
        # Integer means truncate back to the input type, like the ONNX reference.
        return [x.double().mean(dim=axes, keepdim=keepdims).to(x.dtype)]


@register
class ArgMax(OpHandler):
    """ArgMax; the int64 result stays on the data's device (consumers move it where needed)."""

    op_type = "ArgMax"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axis = node.attr("axis", 0)
        keepdims = bool(node.attr("keepdims", 1))
        if not node.attr("select_last_index", 0):
            return [torch.argmax(x, dim=axis, keepdim=keepdims)]
        # torch returns the first maximum; the last one is the first of the flipped axis.
        flipped = torch.argmax(x.flip(axis), dim=axis, keepdim=keepdims)
        return [x.shape[axis] - 1 - flipped]
