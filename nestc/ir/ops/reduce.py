"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, the norms (ReduceL1, ReduceL2,
ReduceSumSquare), the logarithmic ones (ReduceLogSum, ReduceLogSumExp), ArgMax and ArgMin."""

from __future__ import annotations

from abc import abstractmethod

import torch

from nestc.ir.ops.elementwise import from_signed, highest, lowest, required, to_signed
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


class _FloatReduce(_Reduce):
    """A reduction computed in the input's type through a float formula (integer inputs in float64, the
    result truncated back, as the ONNX reference does)."""

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        value = x if x.is_floating_point() else x.double()
        return self.formula(value, axes, keepdims).to(x.dtype)

    @abstractmethod
    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        """The reduction of a float tensor."""


@register
class ReduceMean(_FloatReduce):
    op_type = "ReduceMean"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return x.mean(dim=axes, keepdim=keepdims)


@register
class ReduceSum(_Reduce):
    """ReduceSum; integer sums wrap in the input type (torch would widen them to int64)."""

    op_type = "ReduceSum"

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return x.sum(dim=axes, keepdim=keepdims).to(x.dtype)


class _ExtremeReduce(_Reduce):
    """ReduceMax and ReduceMin; an empty reduction gives the value no element can pass (for ReduceMax the
    type's lowest: -inf, the integer minimum, False; for ReduceMin its highest)."""

    pick = staticmethod(torch.amax)
    empty = staticmethod(lowest)

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        if any(x.shape[a] == 0 for a in axes):
            shape = [1 if a in axes else n for a, n in enumerate(x.shape) if keepdims or a not in axes]
            return torch.full(shape, self.empty(x.dtype), dtype=x.dtype, device=x.device)
        return from_signed(self.pick(to_signed(x, ordered=True), dim=axes, keepdim=keepdims), x.dtype, ordered=True)


@register
class ReduceMax(_ExtremeReduce):
    op_type = "ReduceMax"


@register
class ReduceMin(_ExtremeReduce):
    op_type = "ReduceMin"
    pick = staticmethod(torch.amin)
    empty = staticmethod(highest)


@register
class ReduceProd(_Reduce):
    """ReduceProd; torch's ``prod`` takes one axis, so the axes are flattened into one first."""

    op_type = "ReduceProd"

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        kept = [a for a in range(x.dim()) if a not in axes]
        flat = x.permute(*kept, *axes).reshape(*[x.shape[a] for a in kept], -1)
        product = flat.prod(dim=-1).to(x.dtype)
        if keepdims:
            product = product.reshape([1 if a in axes else n for a, n in enumerate(x.shape)])
        return product


@register
class ReduceL1(_FloatReduce):
    op_type = "ReduceL1"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return x.abs().sum(dim=axes, keepdim=keepdims)


@register
class ReduceL2(_FloatReduce):
    op_type = "ReduceL2"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return (x * x).sum(dim=axes, keepdim=keepdims).sqrt()


@register
class ReduceSumSquare(_FloatReduce):
    op_type = "ReduceSumSquare"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return (x * x).sum(dim=axes, keepdim=keepdims)


@register
class ReduceLogSum(_FloatReduce):
    op_type = "ReduceLogSum"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return x.sum(dim=axes, keepdim=keepdims).log()


@register
class ReduceLogSumExp(_FloatReduce):
    op_type = "ReduceLogSumExp"

    def formula(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        if any(x.shape[a] == 0 for a in axes):  # torch refuses empty axes; the sum of nothing is 0
            return x.sum(dim=axes, keepdim=keepdims).log()
        return torch.logsumexp(x, dim=axes, keepdim=keepdims)


class _ArgExtreme(OpHandler):
    """ArgMax and ArgMin; the int64 result stays on the data's device (consumers move it where needed)."""

    pick = staticmethod(torch.argmax)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axis = node.attr("axis", 0)
        keepdims = bool(node.attr("keepdims", 1))
        if not node.attr("select_last_index", 0):
            return [self.pick(x, dim=axis, keepdim=keepdims)]
        # torch returns the first extreme; the last one is the first of the flipped axis.
        flipped = self.pick(x.flip(axis), dim=axis, keepdim=keepdims)
        return [x.shape[axis] - 1 - flipped]


@register
class ArgMax(_ArgExtreme):
    op_type = "ArgMax"


@register
class ArgMin(_ArgExtreme):
    op_type = "ArgMin"
    pick = staticmethod(torch.argmin)
