"""nestc, the NeST compiler: grow-and-prune compression of ONNX models, ONNX in, ONNX out.

The Python API mirrors the command line::

    import nestc
    nestc.seed("lenet-300-100", "seed.onnx", width_ratio=0.4, density=0.1)
    result = nestc.compress("seed.onnx", "small.onnx", data="fashion-mnist")
    print(result.report["compression"], nestc.inspect("small.onnx").nonzero_params)

The names above are imported on first use (PEP 562): the command line starts without torch and
onnxruntime, so ``nestc --help`` and a mistyped option answer at once, and a Ctrl-C while torch loads
ends as every other interrupt does, in one line, instead of a traceback from inside an import.
"""

import importlib
import os
from typing import TYPE_CHECKING

# onnxruntime (1.29 and later) collects usage telemetry on Linux and macOS as well: importing it writes a
# device id and an upload queue under ~/.cache/Microsoft unless it recognises the CI system it runs on.
# nestc writes the files it is asked for and nothing else, and uses the network only for --download. Set
# before any module of nestc imports onnxruntime; ORT_DISABLE_TELEMETRY=0 in the environment still wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from nestc.api import compact, evaluate, inspect, seed, train, validate
    from nestc.compression import compress
    from nestc.schedule.config import NestConfig
    from nestc.training import TrainConfig

__version__ = "0.1.0"

_HOMES = {
    "compact": "nestc.api", "evaluate": "nestc.api", "inspect": "nestc.api", "seed": "nestc.api",
    "train": "nestc.api", "validate": "nestc.api", "compress": "nestc.compression",
    "NestConfig": "nestc.schedule.config", "TrainConfig": "nestc.training",
}
"""Where each public name lives; no submodule may share a public name, or importing it would replace
the function (``nestc.compress`` the function lives in ``nestc.compression`` for that reason)."""

__all__ = ["NestConfig", "TrainConfig", "compact", "compress", "evaluate", "inspect", "seed", "train", "validate"]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use and keep the name, so later lookups are plain."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'nestc' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
