"""Reductions: ReduceMean, ReduceSum, ReduceMax and ArgMax."""

from __future__ import annotations

from abc import abstractmethod

import torch

from nestc.ir.ops.elementwise import from_signed, lowest, required, to_signed
from nestc.ir.ops.shape import ints_from
from nestc.ir.registry import Node, OpHandler, register


class _Reduce(OpHandler):
    """Shared forward of the reductions: ``axes`` is an attribute in older opsets and an optional input in
    newer ones (ReduceSum from 13, the others from 18). Without axes every axis is reduced, or none with
    ``noop_with_empty_axes``; ``keepdims`` (default 1) keeps reduced axes with size 1."""

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axes = ints_from(node, inputs, 1, "axes") or []
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        return [self.reduce(x, [a % x.dim() for a in axes], bool(node.attr("keepdims", 1)))]

    @abstractmethod
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        """Reduce ``x`` over ``axes`` (non-negative; all of them when none were given)."""


@register
class ReduceMean(_Reduce):
    op_type = "ReduceMean"

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        if x.is_floating_point():
            return x.mean(dim=axes, keepdim=keepdims)
        # Integer means truncate back to the input type, like the ONNX reference.
        return x.double().mean(dim=axes, keepdim=keepdims).to(x.dtype)


@register
class ReduceSum(_Reduce):
    """ReduceSum; integer sums wrap in the input type (torch would widen them to int64)."""

    op_type = "ReduceSum"

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return x.sum(dim=axes, keepdim=keepdims).to(x.dtype)


@register
class ReduceMax(_Reduce):
    """ReduceMax; an empty reduction gives the type's lowest value (-inf, the integer minimum, False)."""

    op_type = "ReduceMax"

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        if any(x.shape[a] == 0 for a in axes):
            shape = [1 if a in axes else n for a, n in enumerate(x.shape) if keepdims or a not in axes]
            return torch.full(shape, lowest(x.dtype), dtype=x.dtype, device=x.device)
        return from_signed(to_signed(x, ordered=True).amax(dim=axes, keepdim=keepdims), x.dtype, ordered=True)


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
