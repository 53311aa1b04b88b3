"""nestc, the NeST compiler: grow-and-prune compression of ONNX models, ONNX in, ONNX out.

The Python API mirrors the command line::

    import nestc
    nestc.seed("lenet-300-100", "seed.onnx", width_ratio=0.4, density=0.1)
    result = nestc.compress("seed.onnx", "small.onnx", data="fashion-mnist")
    print(result.report["compression"], nestc.inspect("small.onnx").nonzero_params)
"""

import os

# onnxruntime (1.29 and later) collects usage telemetry on Linux and macOS as well: importing it writes a
# device id and an upload queue under ~/.cache/Microsoft unless it recognises the CI system it runs on.
# nestc writes the files it is asked for and nothing else, and uses the network only for --download. Set
# before any module of nestc imports onnxruntime; ORT_DISABLE_TELEMETRY=0 in the environment still wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from nestc.api import compact, evaluate, inspect, seed, train, validate
from nestc.compress import compress
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig

__version__ = "0.1.0"

__all__ = ["NestConfig", "TrainConfig", "compact", "compress", "evaluate", "inspect", "seed", "train", "validate"]
