"""Training throughput: the nestc IR (ONNX graph executed by torch) versus plain PyTorch code.

Both train the same architecture on the same data on the same device in the same process, with the
same optimiser and batch size; the plain side is a hand-written ``nn.Sequential`` and loop. Prints a
markdown table and writes ``benchmarks/results/train_throughput.json``. Goal: nestc >= 0.85 x plain.

    python benchmarks/train_throughput.py [--device auto] [--samples 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info  # benchmarks/machine.py (this script's folder is on sys.path)
from torch import nn

from nestc.data import fit_to_input, load_dataset
from nestc.ir.classifier import ClassifierView
from nestc.ir.network import Network
from nestc.seeds import build_seed
from nestc.training import TrainConfig, Trainer
from nestc.training.config import resolve_device

PLAIN = {
    "lenet-300-100": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                                           nn.ReLU(), nn.Linear(100, 10)),
    "lenet-5": lambda: nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                                     nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                                     nn.Linear(500, 10)),
}


def plain_samples_per_second(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> float:
    """One epoch of a hand-written loop: randperm, index, forward, backward, SGD step."""
    torch.manual_seed(0)
    model = PLAIN[arch]().to(device)
    model(x[:batch]).sum().backward()  # the same warm-up the nestc side gets
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), device=device)
    start = time.perf_counter()
    for i in range(0, len(x) - batch + 1, batch):
        index = order[i: i + batch]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (len(x) // batch * batch) / (time.perf_counter() - start)


def nestc_samples_per_second(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, device: str) -> float:
    """Wall-clock rate of one epoch of ``Trainer.fit`` on the ONNX seed of the same architecture
    (everything the trainer does per fit included: data checks, NaN snapshots, accuracy counters)."""
    view = ClassifierView(Network(build_seed(arch)))
    trainer = Trainer(TrainConfig(batch_size=batch, device=device, quiet=True, weight_decay=1e-4, amp="off"))
    trainer.fit(view, x[: 4 * batch], y[: 4 * batch], epochs=1)  # one-off lazy imports and allocations
    start = time.perf_counter()
    trainer.fit(view, x, y, epochs=1)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return (len(x) // batch * batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    device = resolve_device(args.device, 0)
    data = fit_to_input(load_dataset("fashion-mnist", limit=args.samples), ["N", 1, 28, 28])
    x = torch.as_tensor(data.x_train, device=device)
    y = torch.as_tensor(data.y_train, device=device)
    rows = []
    for arch in PLAIN:
        nestc_rates, plain_rates = [], []
        for _ in range(args.repeats):  # interleaved, so machine load hits both alike
            nestc_rates.append(nestc_samples_per_second(arch, x, y, args.batch_size, str(device)))
            plain_rates.append(plain_samples_per_second(arch, x, y, args.batch_size, device))
        nestc_rate, plain_rate = float(np.median(nestc_rates)), float(np.median(plain_rates))
        rows.append({"model": arch, "device": str(device), "nestc_samples_per_s": round(nestc_rate),
                     "plain_samples_per_s": round(plain_rate), "ratio": round(nestc_rate / plain_rate, 3)})
    print("| model | device | nestc samples/s | plain PyTorch samples/s | ratio |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['device']} | {row['nestc_samples_per_s']:,} | "
              f"{row['plain_samples_per_s']:,} | {row['ratio']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), "args": vars(args), "rows": rows}
    (out / "train_throughput.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
