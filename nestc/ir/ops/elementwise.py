"""Element-wise ops with numpy broadcasting (arithmetic, Max/Min/Sum/Mean, comparisons, logic, Where), and the
input helpers all handlers share."""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from typing import ClassVar

import torch

from nestc.ir.registry import Node, OpHandler, register


def required(inputs: list[torch.Tensor | None], index: int) -> torch.Tensor:
    """Input ``index``, which the op's schema requires; a clear error when the node omits it."""
    value = optional(inputs, index)
    if value is None:
        raise ValueError(f"input {index} is required but missing")
    return value


def optional(inputs: list[torch.Tensor | None], index: int) -> torch.Tensor | None:
    """Input ``index`` or ``None`` when omitted (empty name or beyond the node's inputs)."""
    return inputs[index] if len(inputs) > index else None


def align_devices(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move every tensor to the first non-CPU device among them.

    Integer tensors and ``Constant`` outputs live on the CPU while float data may sit on a GPU; this
    lets them meet without callers caring. Same-device tensors are returned untouched.
    """
    device = next((t.device for t in tensors if t.device.type != "cpu"), None)
    if device is None:
        return list(tensors)
    return [t.to(device) for t in tensors]


# torch has few kernels for wide unsigned types: uint16/uint32 are computed exactly in int64, uint64 in its
# int64 bits (two's complement: +, -, * are bitwise the same), with the sign bit flipped where order matters.
_WIDENED = (torch.uint16, torch.uint32)
_SIGN_BIT = torch.iinfo(torch.int64).min


def to_signed(t: torch.Tensor, ordered: bool) -> torch.Tensor:
    """``t`` in a type torch computes with: wide unsigned tensors become int64, others are unchanged.

    ``ordered`` keeps the unsigned order of uint64 (for comparisons and max/min) instead of its bits
    (for modular arithmetic); :func:`from_signed` undoes either.
    """
    if t.dtype in _WIDENED:
        return t.long()
    if t.dtype == torch.uint64:
        bits = t.view(torch.int64)
        return bits ^ _SIGN_BIT if ordered else bits
    return t


def from_signed(t: torch.Tensor, dtype: torch.dtype, ordered: bool) -> torch.Tensor:
    """Back from :func:`to_signed` to ``dtype``; boolean results (comparisons) stay as they are."""
    if t.dtype == torch.bool or dtype == t.dtype:
        return t
    if dtype == torch.uint64:
        return (t ^ _SIGN_BIT if ordered else t).view(torch.uint64)
    return t.to(dtype)


def lowest(dtype: torch.dtype) -> float | int | bool:
    """The smallest value of ``dtype``: -inf for floating types, the minimum for integers, False for bool."""
    if dtype == torch.bool:
        return False
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


def highest(dtype: torch.dtype) -> float | int | bool:
    """The largest value of ``dtype``: inf for floating types, the maximum for integers, True for bool."""
    if dtype == torch.bool:
        return True
    return math.inf if dtype.is_floating_point else torch.iinfo(dtype).max


class _Elementwise(OpHandler):
    """Shared forward of the element-wise ops with numpy broadcasting, folded left over the operands.

    ``variadic`` ops take 1 to N inputs (Max, Min, Sum, Mean), the others exactly two. ``unsigned`` says
    how wide unsigned operands are computed (see :func:`to_signed`): ``"modular"`` for arithmetic that
    wraps like C integers, ``"ordered"`` for comparisons and max/min, ``None`` where uint64 has no exact
    int64 form (refused).
    """

    variadic: ClassVar[bool] = False
    unsigned: ClassVar[str | None] = "modular"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        if self.variadic:
            operands = [t for t in inputs if t is not None]
            if not operands:
                raise ValueError("at least one input is required")
        else:
            operands = [required(inputs, 0), required(inputs, 1)]
        dtype = operands[0].dtype
        if dtype == torch.uint64 and self.unsigned is None:
            raise ValueError(f"{self.op_type} of uint64 tensors is not supported; accepted: floating types, "
                             "int8 to int64, uint8 to uint32")
        ordered = self.unsigned == "ordered"
        result = functools.reduce(self.apply, [to_signed(t, ordered) for t in align_devices(*operands)])
        return [from_signed(result, dtype, ordered)]

    @abstractmethod
    def apply(self, a: torch.Tensor, b: torch.Tensor, /) -> torch.Tensor:
        """The operation on two aligned tensors (positional: subclasses may set a torch function, whose
        parameters have other names)."""


@register
class Add(_Elementwise):
    op_type = "Add"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


@register
class Sub(_Elementwise):
    op_type = "Sub"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


@register
class Mul(_Elementwise):
    op_type = "Mul"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


@register
class Div(_Elementwise):
    op_type = "Div"
    unsigned = None

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # ONNX integer division truncates toward zero (C semantics), torch's ``/`` would give floats.
        if a.is_floating_point():
            return a / b
        return torch.div(a, b, rounding_mode="trunc")


@register
class Pow(_Elementwise):
    """Pow; the result has the base's type (an integer base with a float exponent truncates back)."""

    op_type = "Pow"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.pow(a, b).to(a.dtype)


@register
class Max(_Elementwise):
    op_type = "Max"
    variadic, unsigned = True, "ordered"
    apply = staticmethod(torch.maximum)


@register
class Min(_Elementwise):
    op_type = "Min"
    variadic, unsigned = True, "ordered"
    apply = staticmethod(torch.minimum)


@register
class Sum(_Elementwise):
    op_type = "Sum"
    variadic = True
    apply = staticmethod(torch.add)


@register
class Mean(Sum):
    """Mean: the broadcast sum of all inputs divided by their count (floating types only, as in ONNX)."""

    op_type = "Mean"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        (total,) = super().forward(node, inputs, training)
        return [total / sum(t is not None for t in inputs)]


class _Comparison(_Elementwise):
    """A boolean comparison; wide unsigned operands keep their order (see :func:`to_signed`)."""

    unsigned = "ordered"


@register
class Equal(_Comparison):
    op_type = "Equal"
    apply = staticmethod(torch.eq)


@register
class Less(_Comparison):
    op_type = "Less"
    apply = staticmethod(torch.lt)


@register
class Greater(_Comparison):
    op_type = "Greater"
    apply = staticmethod(torch.gt)


@register
class GreaterOrEqual(_Comparison):
    op_type = "GreaterOrEqual"
    apply = staticmethod(torch.ge)


@register
class LessOrEqual(_Comparison):
    op_type = "LessOrEqual"
    apply = staticmethod(torch.le)


@register
class And(_Elementwise):
    op_type = "And"
    apply = staticmethod(torch.logical_and)


@register
class Or(_Elementwise):
    op_type = "Or"
    apply = staticmethod(torch.logical_or)


@register
class Xor(_Elementwise):
    op_type = "Xor"
    apply = staticmethod(torch.logical_xor)


@register
class Not(OpHandler):
    op_type = "Not"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [torch.logical_not(required(inputs, 0))]


@register
class Where(OpHandler):
    """Where: X where the condition holds, else Y, all three broadcast together."""

    op_type = "Where"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        condition, x, y = align_devices(required(inputs, 0), required(inputs, 1), required(inputs, 2))
        return [torch.where(condition.bool(), x, y)]
