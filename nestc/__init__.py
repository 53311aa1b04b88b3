"""nestc, the NeST compiler: grow-and-prune compression of ONNX models, ONNX in, ONNX out.

The Python API mirrors the command line::

    import nestc
    nestc.seed("lenet-300-100", "seed.onnx", width_ratio=0.4, density=0.1)
    result = nestc.compress("seed.onnx", "small.onnx", data="fashion-mnist")
    print(result.report["compression"], nestc.inspect("small.onnx").nonzero_params)
"""

from nestc.api import compact, evaluate, inspect, seed, train, validate
from nestc.compress import compress
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig

__version__ = "0.1.0"

__all__ = ["NestConfig", "TrainConfig", "compact", "compress", "evaluate", "inspect", "seed", "train", "validate"]
