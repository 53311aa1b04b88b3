"""nestc, the NeST compiler: grow-and-prune compression of ONNX models."""

__version__ = "0.1.0"
