"""Binary arithmetic with numpy broadcasting (Add, Sub, Mul, Div), and the input helpers all handlers share."""

from __future__ import annotations

from abc import abstractmethod

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


# torch has few kernels for wide unsigned types; these are computed exactly in int64 and wrapped back.
_WIDENED = (torch.uint16, torch.uint32)


class _Binary(OpHandler):
    """Shared forward of the element-wise binary ops; ``modular`` ops wrap around like C integers."""

    modular: bool = True

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        a, b = align_devices(required(inputs, 0), required(inputs, 1))
        if a.dtype in _WIDENED:
            return [self.apply(a.long(), b.long()).to(a.dtype)]
        if a.dtype == torch.uint64:  # two's complement: +, -, * are bitwise the same on int64
            if not self.modular:
                raise ValueError(f"{self.op_type} of uint64 tensors is not supported; accepted: floating types, "
                                 "int8 to int64, uint8 to uint32")
            return [self.apply(a.view(torch.int64), b.view(torch.int64)).view(torch.uint64)]
        return [self.apply(a, b)]

    @abstractmethod
    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The operation on two aligned tensors."""


@register
class Add(_Binary):
    op_type = "Add"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


@register
class Sub(_Binary):
    op_type = "Sub"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


@register
class Mul(_Binary):
    op_type = "Mul"

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


@register
class Div(_Binary):
    op_type = "Div"
    modular = False

    def apply(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # ONNX integer division truncates toward zero (C semantics), torch's ``/`` would give floats.
        if a.is_floating_point():
            return a / b
        return torch.div(a, b, rounding_mode="trunc")
