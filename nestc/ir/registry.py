"""The op registry: one :class:`OpHandler` per ONNX ``op_type``.

A handler owns how one operator runs in torch, which of its inputs are trainable weights and how many
multiply-accumulates it costs. How channel axes flow through an op is a separate table
(:data:`nestc.channels.rules.CHANNEL_RULES`): the IR knows nothing of channel spaces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass
class Node:
    """One ONNX node as the IR sees it: names as in the file, attributes decoded to Python values."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        """Return attribute ``key`` or ``default`` when the node does not set it."""
        return self.attrs.get(key, default)

    def describe(self) -> str:
        """A short label for messages: ``'name' (OpType)``."""
        return f"node '{self.name}' ({self.op_type})"


class OpHandler(ABC):
    """Base of all op handlers; subclasses set ``op_type`` and implement :meth:`forward`.

    Attributes:
        op_type: the ONNX operator this handler implements.
        domains: ONNX domains it accepts ("" is the default ONNX domain).
        weight_inputs: input positions whose float initializers are trainable weights.
    """

    op_type: ClassVar[str] = ""
    domains: ClassVar[tuple[str, ...]] = ("",)
    weight_inputs: ClassVar[tuple[int, ...]] = ()

    @abstractmethod
    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        """Compute the node's outputs from its inputs (``None`` for omitted optional inputs)."""

    def macs(self, node: Node, in_shapes: list[tuple[int, ...] | None], out_shapes: list[tuple[int, ...] | None],
             weights: list[torch.Tensor | None]) -> int:
        """Multiply-accumulates for one sample; 0 for ops whose cost is negligible next to weights."""
        return 0


_REGISTRY: dict[str, OpHandler] = {}


def register(cls: type[OpHandler]) -> type[OpHandler]:
    """Class decorator adding one handler instance to the registry under its ``op_type``."""
    if not cls.op_type:
        raise TypeError(f"{cls.__name__} must set op_type")
    if cls.op_type in _REGISTRY:
        raise TypeError(f"two handlers for {cls.op_type}: {type(_REGISTRY[cls.op_type]).__name__} and {cls.__name__}")
    _REGISTRY[cls.op_type] = cls()
    return cls


def handler_for(op_type: str) -> OpHandler | None:
    """The handler registered for ``op_type``, or ``None``."""
    _load_ops()
    return _REGISTRY.get(op_type)


def registered_ops() -> dict[str, OpHandler]:
    """A copy of the whole registry, ``op_type -> handler``."""
    _load_ops()
    return dict(_REGISTRY)


def _load_ops() -> None:
    # Importing the package registers every handler module once.
    import nestc.ir.ops  # noqa: F401
