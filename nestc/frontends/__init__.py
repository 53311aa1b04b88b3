"""Frontends: turn a user's model file into a checked, normalised ``onnx.ModelProto``."""

from nestc.frontends.onnx_loader import SUPPORTED_OPSETS, load_model

__all__ = ["SUPPORTED_OPSETS", "load_model"]
