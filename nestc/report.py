"""Run reports: the JSON record of a compression and the PNG of the network's evolution.

The plot follows the paper's figures: per-layer widths and non-zero parameters after every step,
so a reader sees where the network grew and where pruning bit.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

from nestc.fileio import atomic_write_bytes


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def plot_history(history: Sequence[dict], path: str | os.PathLike, title: str = "nestc compress") -> None:
    """Plot layer widths and non-zero parameters per step to a PNG at ``path`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [h["step"] for h in history]
    fig, (widths_ax, params_ax) = plt.subplots(1, 2, figsize=(11, 4))
    layers = list(history[-1]["widths"]) if history else []
    for layer in layers:
        widths_ax.plot(steps, [h["widths"].get(layer, float("nan")) for h in history], marker=".", label=layer)
    widths_ax.set(xlabel="step", ylabel="output units", title="layer widths", yscale="log")
    if layers:
        widths_ax.legend(fontsize=7)
    params_ax.plot(steps, [h["nonzero_params"] for h in history], marker=".", label="non-zero parameters")
    params_ax.plot(steps, [h["params"] for h in history], linestyle="--", label="parameters (structure)")
    params_ax.set(xlabel="step", ylabel="count", title="size", yscale="log")
    accuracy_ax = params_ax.twinx()
    accuracy_ax.plot(steps, [h["val_accuracy"] * 100 for h in history], color="black", alpha=0.5,
                     label="held-out accuracy")
    accuracy_ax.set_ylabel("held-out accuracy (%)")
    params_ax.legend(fontsize=7, loc="lower left")
    for step in (h["step"] for h in history if not h["accepted"]):
        params_ax.axvline(step, color="red", alpha=0.15)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
