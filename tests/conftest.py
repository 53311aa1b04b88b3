"""Shared fixtures: zoo exports written once (all xdist workers share them) and kept between runs.

Exporting with torch's dynamo exporter takes a second or more per model, so every distinct export
(model, exporter, BN handling, planted units, opset) is written once, under a lock, and reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import filelock
import models
import pytest
import torch

Plant = tuple  # (space, units, how="fanin", bias=0.0)


@pytest.fixture
def torch_single_thread() -> Iterator[None]:
    """One intra-op thread: these tests run tiny tensors, where thread hand-offs cost more than the
    arithmetic (tenfold on a busy two-core machine), and xdist already runs a process per core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where exports live: pytest's cache folder, so later runs reuse them (file names carry a hash
    of the zoo's source and torch's version), else one folder for this run shared by all workers."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return cache.mkdir("nestc_zoo_exports")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "zoo_exports"
    folder.mkdir(exist_ok=True)
    return folder


_SOURCE_KEY = hashlib.sha1((Path(models.__file__).read_text() + torch.__version__).encode()).hexdigest()[:8]


@pytest.fixture(scope="session")
def zoo_export(export_dir: Path) -> Callable[..., models.Exported]:
    """``zoo_export(name, exporter="legacy", keep_bn=False, train=False, plants=(), opset=None, fresh_bn=False)``.

    ``plants`` are :func:`models.plant_dead` arguments ``(space, units, how, bias)``; the expected
    drop counts each removed parameter once and accounts for BN folded into convolutions.
    """

    def make(name: str, exporter: str = "legacy", keep_bn: bool = False, train: bool = False,
             plants: tuple[Plant, ...] = (), opset: int | None = None, fresh_bn: bool = False) -> models.Exported:
        module = models.build(name, fresh_bn=fresh_bn)
        for plant in plants:
            models.plant_dead(module, *plant)
        removed: dict[str, set[int]] = {}
        for plant in plants:
            removed.setdefault(plant[0], set()).update(plant[1])
        has_bn = any(ref.role == "bn" for refs in module.SPACES.values() for ref in refs)
        expected = models.removal_count(module, removed, fused_bn=has_bn and not keep_bn)
        if train:
            module.train()
        key = repr((name, exporter, keep_bn, train, plants, opset, fresh_bn))
        digest = hashlib.sha1((key + _SOURCE_KEY).encode()).hexdigest()[:12]
        path = export_dir / f"{name}-{exporter}-{digest}.onnx"
        with filelock.FileLock(str(path) + ".lock"):
            if not path.exists():
                folder = export_dir / f"{path.stem}.{os.getpid()}.tmp"  # the external data keeps its file name
                folder.mkdir()
                models.export(module, folder / path.name, exporter, keep_bn=keep_bn, opset=opset)
                for file in sorted(folder.iterdir(), key=lambda f: f.suffix == ".onnx"):
                    os.replace(file, export_dir / file.name)  # the model last: it marks the export done
                folder.rmdir()
        module.eval()
        return models.Exported(module, str(path), expected, static_batch=exporter == "dynamo")

    return make


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module (the folder is not a package; its scripts import
    ``machine`` as a neighbour, so the folder goes on ``sys.path``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
