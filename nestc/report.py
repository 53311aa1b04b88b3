"""Run reports: the JSON record of a compression and the PNG of the network's evolution.

The plot follows the paper's figures: per-layer widths and non-zero parameters after every step,
so a reader sees where the network grew and where pruning bit.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def json_bytes(payload: dict) -> bytes:
    """``payload`` as indented JSON (:func:`json_text`), ready to be written with the run's other files."""
    return (json_text(payload) + "\n").encode()


def json_text(payload: object) -> str:
    """``payload`` as indented JSON, a NaN or infinity written as ``null``.

    Python's ``json`` writes them as ``NaN`` and ``Infinity``, which are not JSON: ``jq``, JavaScript and
    strict parsers refuse the whole document (``eval --json`` of a model whose scores overflow, say).
    """
    return json.dumps(_finite(payload), indent=2, allow_nan=False)


def _finite(value: object) -> object:
    """``value`` with every non-finite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def history_png(history: Sequence[dict], title: str = "nestc compress", output_step: int | None = None) -> bytes:
    """``history`` plotted (see :func:`history_figure`) as PNG bytes: rendered before any file is written,
    since rendering takes about a second, long enough for an interrupt to split the run's files."""
    buffer = io.BytesIO()
    history_figure(history, title, output_step).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def history_figure(history: Sequence[dict], title: str = "nestc compress", output_step: int | None = None) -> Figure:
    """Layer widths, and non-zero parameters with held-out accuracy, after every step, as a matplotlib figure.

    Rows of undone steps show what was tried, not what was kept, and the last row is often one of them:
    they are shaded red, and ``output_step``, the row of the written file, is marked in both panels, so
    that the plot's last point is not taken for the result.
    """
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no figure left open
    from matplotlib.ticker import MaxNLocator

    steps = [h["step"] for h in history]
    fig = Figure(figsize=(11, 4))
    widths_ax, params_ax = fig.subplots(1, 2)
    layers = list(history[-1]["widths"]) if history else []
    for layer in layers:
        widths_ax.plot(steps, [h["widths"].get(layer, float("nan")) for h in history], marker=".", label=layer)
    widths_ax.set(xlabel="step", ylabel="output units", title="layer widths", yscale="log")
    params_ax.plot(steps, [h["nonzero_params"] for h in history], marker=".", label="non-zero parameters")
    params_ax.plot(steps, [h["params"] for h in history], linestyle="--", label="parameters (structure)")
    params_ax.set(xlabel="step", ylabel="count", title="size", yscale="log")
    accuracy_ax = params_ax.twinx()
    accuracy_ax.plot(steps, [h["val_accuracy"] * 100 for h in history], color="black", alpha=0.5,
                     label="held-out accuracy (right axis)")
    accuracy_ax.set_ylabel("held-out accuracy (%)")
    for ax in (widths_ax, params_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for index, step in enumerate(h["step"] for h in history if not h["accepted"]):
            ax.axvline(step, color="red", alpha=0.3, label="_" if index else "undone step")
        if output_step is not None:
            ax.axvline(output_step, color="green", linestyle=":", label=f"written (step {output_step})")
    if layers:
        widths_ax.legend(fontsize=7)
    handles, labels = params_ax.get_legend_handles_labels()
    more_handles, more_labels = accuracy_ax.get_legend_handles_labels()
    params_ax.legend(handles + more_handles, labels + more_labels, fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
