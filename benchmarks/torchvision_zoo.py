"""Structural stress test: torchvision's architectures, exported both ways, through ``nestc.compress``.

The NeST table measures compression quality on two LeNets; this script asks a different question:
does every step (import, channel spaces, pruning of connections *and* whole units, compaction, emit,
onnxruntime validation) hold on the graphs real users export? Each architecture (residual, inverted
residual with squeeze-excitation, channel shuffle, fire-module concat, inception concat, dense
concat, grouped convolutions) is built by torchvision with 10 classes, trained briefly in plain
PyTorch on Fashion-MNIST padded to 32x32 RGB, exported by torch's legacy (TorchScript) and dynamo
exporters with a dynamic batch, and compressed with aggressive settings (half the connections and
30 % of the units per step, any accuracy accepted) so that compaction has to remove units in every
kind of channel space. Accuracy after such a run says nothing about nestc's defaults; the columns
that matter are the exit status and how far compaction shrank the parameter count.

Needs ``torchvision`` (not a dependency of nestc): ``pip install --no-deps torchvision==<the release
built for your torch>``. Only the model definitions are used; a torchvision wheel built for CUDA
imports on a CPU-only torch once its compiled-operator registrations are skipped (done below).

Usage::

    python benchmarks/torchvision_zoo.py                         # every model, both exporters
    python benchmarks/torchvision_zoo.py --models resnet18,shufflenet_v2_x0_5 --limit 1000
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import torch
from machine import machine_info

import nestc
from nestc.data import load_dataset
from nestc.errors import NestcError

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "efficientnet_b0", "shufflenet_v2_x0_5",
          "squeezenet1_1", "googlenet", "densenet121", "regnet_x_400mf")
EXPORTERS = ("legacy", "dynamo", "onnxruntime")
"""``onnxruntime``: the legacy export as onnxruntime saves it after its ORT_ENABLE_EXTENDED graph optimisations
(com.microsoft FusedConv, FusedGemm, QuickGelu), the file a user of onnxruntime's offline optimisation has."""
STRESS = {"max_acc_drop": 100.0, "prune_fraction": 0.5, "unit_prune_fraction": 0.3, "lr_check_epochs": 0.0,
          "grow_prune_cycles": 0, "grow_epochs": 0.5, "grow_steps": 1}
"""Every step is kept whatever it costs: the run exercises compaction, not the accuracy budget. An
architecture that two epochs leave at chance (MobileNetV3, MnasNet) counts as untrained, so compress
trains and grows it first: half-epoch growth steps leave room for pruning in the same budget."""


def import_torchvision_models() -> ModuleType:
    """``torchvision.models``, skipping fake-kernel registrations of compiled ops this torch lacks."""
    register_fake = torch.library.register_fake

    def tolerant(name: object, *args: object, **kwargs: object) -> Callable:
        if isinstance(name, str) and name.startswith("torchvision::"):
            return lambda function: function
        return register_fake(name, *args, **kwargs)

    torch.library.register_fake = tolerant
    try:
        import torchvision.models as models
    finally:
        torch.library.register_fake = register_fake
    return models


def rgb32(images: np.ndarray) -> np.ndarray:
    """[N, 1, 28, 28] grey in [0, 1] -> [N, 3, 32, 32] uint8, centred (CIFAR-sized input)."""
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.repeat(np.round(padded * 255).astype(np.uint8), 3, axis=1)


def write_data(path: Path, limit: int, test_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Save the ``.npz`` nestc reads and return the training tensors, normalised, for PyTorch."""
    data = load_dataset("fashion-mnist", limit=limit)
    x_train, x_test = rgb32(data.x_train), rgb32(data.x_test[:test_limit])
    np.savez(path, x_train=x_train, y_train=data.y_train, x_test=x_test, y_test=data.y_test[:test_limit])
    images = torch.tensor(x_train, dtype=torch.float32) / 255
    return (images - images.mean()) / images.std(), torch.tensor(data.y_train)


def train(module: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int) -> None:
    """Adam at 2e-3, batch 64: the quick fine-tune a user runs before exporting."""
    optimiser = torch.optim.Adam(module.parameters(), 2e-3)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(module(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    module.eval()


def export(module: torch.nn.Module, path: Path, exporter: str) -> None:
    """Export with a dynamic batch, as each exporter's documentation shows."""
    if exporter == "onnxruntime":
        legacy = path.with_suffix(".legacy.onnx")
        export(module, legacy, "legacy")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(str(legacy), options, providers=["CPUExecutionProvider"])
        return
    example = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("n", min=1, max=1024)},))


def run_model(name: str, models: ModuleType, data: Path, images: torch.Tensor, labels: torch.Tensor,
              workdir: Path, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    module = getattr(models, name)(num_classes=10, **extra)
    train(module, images, labels, args.train_epochs)
    rows = []
    for exporter in args.exporters.split(","):
        source, output = workdir / f"{name}.{exporter}.onnx", workdir / f"{name}.{exporter}.nest.onnx"
        export(module, source, exporter)
        started = time.perf_counter()
        config = nestc.NestConfig(max_epochs=args.max_epochs, **STRESS)
        try:
            result = nestc.compress(source, output, str(data), config, nestc.TrainConfig(quiet=True, seed=0),
                                    log=lambda _line: None)
            report = result.report
            rows.append({"model": name, "exporter": exporter, "exit": result.exit_code,
                         "params_before": report["params"]["before"], "params_after": report["params"]["after"],
                         "nonzero_after": report["nonzero_params"]["after"],
                         "accuracy_before": report["accuracy"]["before"], "accuracy_after": report["accuracy"]["after"],
                         "seconds": round(time.perf_counter() - started, 1)})
        except NestcError as exc:
            rows.append({"model": name, "exporter": exporter, "exit": exc.exit_code, "error": str(exc),
                         "seconds": round(time.perf_counter() - started, 1)})
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['model']} | {row['exporter']} | {row['exit']} | {row['error']} | | | | {row['seconds']} |"
    shrink = row["params_before"] / row["params_after"]
    return (f"| {row['model']} | {row['exporter']} | {row['exit']} | {row['params_before']:,} | "
            f"{row['params_after']:,} ({shrink:.2f}x) | {row['nonzero_after']:,} | "
            f"{row['accuracy_before']:.2%} -> {row['accuracy_after']:.2%} | {row['seconds']} |")


HEADER = ("| model | exporter | exit | params | params after compaction | non-zero after | test acc (ORT) | wall s |\n"
          "|---|---|---:|---:|---:|---:|---|---:|")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision model names")
    parser.add_argument("--exporters", default="legacy,dynamo",
                        help=f"comma-separated, of {', '.join(EXPORTERS)} (the legacy export saved by onnxruntime)")
    parser.add_argument("--limit", type=int, default=3000, help="training images")
    parser.add_argument("--test-limit", type=int, default=1000, help="test images")
    parser.add_argument("--train-epochs", type=int, default=2, help="PyTorch training before export")
    parser.add_argument("--max-epochs", type=float, default=1.5, help="nestc compress budget per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "torchvision_zoo.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = import_torchvision_models()
    started = time.perf_counter()
    rows: list[dict] = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        images, labels = write_data(workdir / "data.npz", args.limit, args.test_limit)
        for name in args.models.split(","):
            rows += run_model(name, models, workdir / "data.npz", images, labels, workdir, args)
    payload = {"command": " ".join(sys.argv), "date": datetime.date.today().isoformat(), "machine": machine_info(),
               "settings": {**vars(args), "out": str(args.out), "stress": STRESS},
               "total_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
