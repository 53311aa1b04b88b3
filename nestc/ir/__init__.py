"""The trainable intermediate representation: an ONNX graph executed by PyTorch."""

from nestc.ir.network import Network
from nestc.ir.registry import Node, OpHandler, handler_for, register, registered_ops

__all__ = ["Network", "Node", "OpHandler", "handler_for", "register", "registered_ops"]
