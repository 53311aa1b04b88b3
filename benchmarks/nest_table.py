"""The NeST table: dense baseline, pruning only, onnxsim's ONNX-native pruning and nestc, on Fashion-MNIST
(``--data`` for another set, ``--data sklearn-digits`` for scikit-learn's digits at 28x28).

For each model (LeNet-300-100, LeNet-5) one run trains and compresses every method on the *same*
data, with the same total epoch budget for the methods that train:

- ``dense``: ``nestc.seed(arch)`` (full width, dense) trained for ``E`` epochs by ``nestc.training``.
- ``pruning only (Han et al.)``: iterative magnitude pruning with retraining on a fixed schedule
  (Han et al. 2015; ``han_pruning.py``): 10 % of every layer's remaining weights per round, one
  epoch of retraining, the sparsest round within the budget (rounds go on until the epoch budget, or
  until one is more than a point below the budget). 10 % rounds fill the epoch budget; 20 % rounds
  ended 1.5-2x less sparse on LeNet-300-100.
- ``pruning only (nestc schedule)``: the ablation: ``nestc.compress`` with everything NeST adds
  switched off (no growth, no grow-and-prune cycles, no regrowth, no partial-area convolution, no
  distillation), so the same adaptive schedule (global ranking, undone steps, unit removal) and
  epoch budget otherwise.
- ``onnxsim magnitude/structured s=...``: onnxsim's ONNX-native pruning of the dense model at several
  sparsities, each followed by ``onnxsim.apply_pruning_finetune`` (closed-form refit on calibration
  batches from the training split; no gradient training).
- ``nestc (dense)``: ``nestc.compress`` of the dense model, default schedule, ``--max-acc-drop 0.5``
  (``--curve`` adds 1.0 and 2.0).
- ``nestc (dense, units 0.2)``: the same with ``--unit-prune-fraction 0.2`` (whole neurons and
  feature maps pruned by magnitude, for latency).
- ``nestc (seed)``: ``nestc.compress`` of a NeST seed (narrow, 10 % dense), growth on, with the
  whole epoch budget ``E + C`` (the dense-start methods use ``E`` for dense training plus ``C``).

With ``--seeds 0,1,2`` every method that trains after the dense baseline runs once per training
seed (the dense model stays the one trained with seed 0); its row is the run with the median
non-zero count, and the notes list every run. One compress of LeNet-300-100 varies by 1.4x between
seeds, so a ratio of one run against another is not a measurement of the method.

Every figure is measured on the written ONNX file: accuracy by onnxruntime on the test split,
parameters / non-zeros / MACs by ``nestc.inspect``, latency as the median of onnxruntime runs.

Usage::

    python benchmarks/nest_table.py --quick                      # 6,000 training samples, few epochs
    python benchmarks/nest_table.py --curve                      # full Fashion-MNIST, the real table
    python benchmarks/nest_table.py --models lenet-300-100 --seeds 0,1,2   # median of three training seeds
    python benchmarks/nest_table.py --quick --limit 1000 --dense-epochs 1 --compress-epochs 2  # debug
    python benchmarks/nest_table.py --data sklearn-digits --seeds 0,1,2 --out results/digits   # another data set

``C`` (``--compress-epochs``) is unset by default: every method gets the budget ``nestc compress`` would choose
for the training split (40 epochs from 50,000 samples up, more below; 1,485 for the digits).

Writes ``<out>/<model>[-<data>][-quick|-debug].json`` and prints a markdown table and the target checks per model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from han_pruning import ROUND_FRACTION, han_pruning  # benchmarks/ is on sys.path: this script's folder
from machine import machine_info
from onnx import numpy_helper

import nestc
from nestc import runtime
from nestc import train as nestc_train
from nestc.data import fit_to_input, load_dataset
from nestc.data.subset import stratified_indices
from nestc.errors import first_line

# ------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class ModelPlan:
    """Per-architecture settings: dense training epochs (full / quick) and the NeST seed."""

    arch: str
    dense_epochs: float
    quick_dense_epochs: float
    seed_width: float
    seed_density: float = 0.1


PLANS: dict[str, ModelPlan] = {
    "lenet-300-100": ModelPlan("lenet-300-100", dense_epochs=10, quick_dense_epochs=3, seed_width=0.4),
    "lenet-5": ModelPlan("lenet-5", dense_epochs=8, quick_dense_epochs=2, seed_width=0.5),
}

QUICK_COMPRESS_EPOCHS = 8.0
QUICK_LIMIT = 6000
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
CURVE_DROPS = (1.0, 2.0)
UNIT_FRACTION = 0.2  # the opt-in ``--unit-prune-fraction`` row: fewer, narrower layers (latency)
ONNXSIM_KINDS = ("magnitude", "structured")
BUDGET_POINTS = 0.5  # accuracy budget of the targets: points below the dense baseline

#: The issue's targets, per model: minimum compression (dense params / non-zero params), minimum MAC
#: reduction (dense MACs / non-zero MACs), maximum batch-256 latency relative to dense, and the
#: minimum advantage over pruning only (pruning-only non-zeros / nestc non-zeros).
TARGETS: dict[str, dict[str, float]] = {
    "lenet-300-100": {"compression": 30.0, "vs_pruning_only": 3.0},
    "lenet-5": {"compression": 40.0, "mac_reduction": 10.0, "vs_pruning_only": 3.0, "latency_b256_ratio": 0.2},
}
HAN_ROW = "pruning only (Han et al.)"
ABLATION_ROW = "pruning only (nestc schedule)"
PRUNING_ROWS = {HAN_ROW: "Han et al.", ABLATION_ROW: "nestc schedule"}  # "pruning only" targets: each row


@dataclass
class Settings:
    """Everything one model's run depends on (stored in the JSON)."""

    model: str
    data: str = "fashion-mnist"
    quick: bool = False
    limit: int | None = None
    test_limit: int | None = None
    dense_epochs: float = 10.0
    compress_epochs: float | None = None  # None: nestc's default budget for the data (40 epochs from 50,000 samples)
    device: str = "auto"
    max_acc_drop: float = BUDGET_POINTS
    curve: bool = False
    curve_drops: tuple[float, ...] = CURVE_DROPS
    sparsities: tuple[float, ...] = SPARSITIES
    onnxsim_kinds: tuple[str, ...] = ONNXSIM_KINDS
    calibration_batches: int = 8
    calibration_batch_size: int = 256
    threads: int | None = None
    seeds: tuple[int, ...] = (0,)
    latency_repeats: int = 20
    verbose: bool = False

    @property
    def plan(self) -> ModelPlan:
        """The architecture plan of :attr:`model`."""
        return PLANS[self.model]


def settings_for(model: str, quick: bool = False, **overrides: object) -> Settings:
    """Default settings for ``model`` in full or quick mode; ``None`` overrides are ignored."""
    plan = PLANS[model]
    base = Settings(model, quick=quick,
                    limit=QUICK_LIMIT if quick else None,
                    dense_epochs=plan.quick_dense_epochs if quick else plan.dense_epochs,
                    compress_epochs=QUICK_COMPRESS_EPOCHS if quick else None)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ------------------------------------------------------------------------------------------ rows


@dataclass
class Row:
    """One method's result; ratios are filled in against the dense row by :func:`fill_ratios`."""

    method: str
    accuracy: float | None = None
    params: int | None = None
    nonzero_params: int | None = None
    compression: float | None = None
    macs: int | None = None
    nonzero_macs: int | None = None
    mac_reduction: float | None = None
    file_bytes: int | None = None
    latency_b1_ms: float | None = None
    latency_b256_ms: float | None = None
    epochs: float | None = None
    wall_s: float | None = None
    wall_s_total: float | None = None
    met_budget: bool | None = None
    error: str | None = None
    notes: str = ""
    file: str | None = None
    seed: int = 0


ROW_FIELDS = tuple(f.name for f in fields(Row))


@dataclass
class Context:
    """What every method of one model's run shares: folder, data spec, evaluation tensors."""

    settings: Settings
    workdir: Path
    data: str
    x_test: np.ndarray
    y_test: np.ndarray
    calibration: list[np.ndarray]
    input_name: str
    dense_path: Path | None = None
    dense_wall: float = 0.0
    seed: int = 0  # the training seed of the method being run
    log: Callable[[str], None] = print

    def train_config(self, epochs: float | None = None) -> nestc.TrainConfig:
        """The training configuration every method uses (device from ``--device``, the current seed)."""
        config = nestc.TrainConfig(device=self.settings.device, quiet=not self.settings.verbose, seed=self.seed)
        return config if epochs is None else replace(config, epochs=epochs)

    def output(self, slug: str) -> Path:
        """Where a method writes its model: one file per training seed."""
        return self.workdir / f"{self.settings.model}.{slug}{f'.seed{self.seed}' if self.seed else ''}.onnx"


# ------------------------------------------------------------------------------------------ data


SKLEARN_DIGITS = "sklearn-digits"
"""``--data`` for scikit-learn's digits (1,797 8x8 images) resized to 28x28: the only real data set here besides
Fashion-MNIST, on which no default was chosen, and a small one (1,347 training images)."""


def digits_28(workdir: Path) -> str:
    """scikit-learn's digits, bilinearly resized to 28x28 grey bytes, 25 % of each class held out for testing."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = F.interpolate(torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None], size=(28, 28),
                      mode="bilinear", align_corners=False)[:, 0]
    x = (x.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target.astype(np.int64), test_size=0.25,
                                                        stratify=digits.target, random_state=0)
    path = workdir / "digits28.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def prepare_data(settings: Settings, workdir: Path) -> str:
    """The data spec every method uses: the named set, or an ``.npz`` subset of it when limited.

    ``nestc.training`` has no ``limit``, so a limited run writes the subset (stratified training
    samples, stratified test samples) once and hands the same file to every method.
    """
    data = digits_28(workdir) if settings.data == SKLEARN_DIGITS else settings.data
    if settings.limit is None and settings.test_limit is None:
        return data
    ds = load_dataset(data, limit=settings.limit)
    x_test, y_test = ds.x_test, ds.y_test
    if settings.test_limit is not None and settings.test_limit < len(x_test):
        keep = stratified_indices(y_test, settings.test_limit, seed=0)
        x_test, y_test = x_test[keep], y_test[keep]
    path = workdir / "data.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=x_test, y_test=y_test)
    return str(path)


def evaluation_tensors(spec: str, model_path: Path, batches: int, batch_size: int
                       ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], str]:
    """Test split and onnxsim calibration batches, normalised and shaped for the model's input."""
    model = onnx.load(str(model_path))
    value = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    ds = fit_to_input(load_dataset(spec), ["N", *dims[1:]])
    order = np.random.default_rng(0).permutation(len(ds.x_train))
    calibration = [ds.x_train[order[i: i + batch_size]] for i in range(0, min(len(order), batches * batch_size),
                                                                       batch_size)]
    return ds.x_test, ds.y_test, calibration, value.name


# --------------------------------------------------------------------------------------- measure


def ort_accuracy(model: onnx.ModelProto | bytes, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> float:
    """Top-1 accuracy of the model's first output, computed by onnxruntime."""
    sess = runtime.session(model, threads=threads)
    scores = runtime.run_batched(sess, x, 1024)[0]
    return float((scores.argmax(1) == y).mean())


def measure_file(path: Path, ctx: Context) -> dict:
    """Accuracy, structure, non-zeros, MACs and file size of the file at ``path`` (latency comes later)."""
    data = path.read_bytes()
    stats = nestc.inspect(path)
    return {
        "accuracy": ort_accuracy(data, ctx.x_test, ctx.y_test, ctx.settings.threads),
        "params": stats.params, "nonzero_params": stats.nonzero_params,
        "macs": stats.macs, "nonzero_macs": stats.nonzero_macs,
        "file_bytes": len(data),
        "file": path.name,
    }


def measure_latencies(rows: Sequence[Row], ctx: Context, batches: Sequence[int] = (1, 256)) -> None:
    """Median onnxruntime latency of every row's file at each batch size, in milliseconds.

    Measured after all methods ran, in interleaved rounds (one run of every model per round), so
    that load from other processes and CPU clock changes hit every row alike.
    """
    sessions = {row.method: runtime.session((ctx.workdir / row.file).read_bytes(), row.file,
                                            threads=ctx.settings.threads)
                for row in rows if row.file and row.error is None}
    for batch in batches:
        measured = runtime.interleaved_latency_ms(sessions, ctx.x_test[:batch], ctx.settings.latency_repeats)
        for row in rows:
            if row.method in measured:
                setattr(row, f"latency_b{batch}_ms", round(measured[row.method], 4))


def fill_ratios(rows: list[Row]) -> None:
    """Compression (dense params / non-zero params) and MAC reduction against the dense row."""
    dense = next((r for r in rows if r.method == "dense" and r.error is None), None)
    if dense is None:
        return
    for row in rows:
        if row.nonzero_params:
            row.compression = round(dense.params / row.nonzero_params, 2)
        if row.nonzero_macs:
            row.mac_reduction = round(dense.macs / row.nonzero_macs, 2)


def guarded(method: str, ctx: Context, work: Callable[[], Row]) -> Row:
    """Run one method; an exception becomes a row that records it instead of ending the run."""
    ctx.log(f"--- {ctx.settings.model}: {method}")
    try:
        return work()
    except Exception as exc:  # a table row per failure is the point: report, don't crash
        ctx.log(f"    failed: {type(exc).__name__}: {first_line(exc)}")
        return Row(method, error=f"{type(exc).__name__}: {first_line(exc)}", seed=ctx.seed)


def replicated(method: str, ctx: Context, work: Callable[[], Row]) -> Row:
    """Run ``work`` once per training seed of ``--seeds``; the row with the median non-zero count.

    The notes list every seed's run, so the spread stays visible; a failed seed is listed too and
    the median is taken over the runs that worked.
    """
    runs = []
    for seed in ctx.settings.seeds:
        ctx.seed = seed
        runs.append(guarded(method if len(ctx.settings.seeds) == 1 else f"{method}, seed {seed}", ctx, work))
    ctx.seed = 0
    if len(runs) == 1:
        return runs[0]
    ok = sorted((r for r in runs if r.error is None), key=lambda r: r.nonzero_params)
    chosen = replace(ok[(len(ok) - 1) // 2] if ok else runs[0], method=method)
    listing = ", ".join(f"seed {r.seed}: " + (f"failed ({r.error})" if r.error else
                                              f"{r.nonzero_params:,} at {r.accuracy:.2%}") for r in runs)
    chosen.notes = "; ".join(filter(None, [f"median of {len(ok)} seeds ({listing})", chosen.notes]))
    return chosen


# --------------------------------------------------------------------------------------- methods


def run_dense(ctx: Context) -> Row:
    """Seed the full-width dense architecture and train it for ``dense_epochs`` with ``nestc.training``."""
    s = ctx.settings
    init = ctx.workdir / f"{s.model}.init.onnx"
    dense = ctx.workdir / f"{s.model}.dense.onnx"
    nestc.seed(s.model, init)
    started = time.perf_counter()
    nestc_train(init, dense, data=ctx.data, config=ctx.train_config(s.dense_epochs))
    wall = time.perf_counter() - started
    ctx.dense_path, ctx.dense_wall = dense, wall
    return Row("dense", epochs=s.dense_epochs, wall_s=round(wall, 2), wall_s_total=round(wall, 2),
               **measure_file(dense, ctx))


def compress_row(ctx: Context, method: str, source: Path, config: nestc.NestConfig, start_epochs: float,
                 start_wall: float) -> Row:
    """``nestc.compress`` ``source`` with ``config`` and measure the written file.

    ``start_epochs``/``start_wall`` are what producing ``source`` cost (dense training, or nothing
    for a seed); they are added to the row's epochs and total wall time.
    """
    output = ctx.output(method.replace(" ", "_").replace("(", "").replace(")", "").replace("=", ""))
    log = ctx.log if ctx.settings.verbose else (lambda _line: None)
    started = time.perf_counter()
    result = nestc.compress(source, output, data=ctx.data, config=config, train_config=ctx.train_config(), log=log)
    wall = time.perf_counter() - started
    history = result.report.get("history") or []
    used = float(history[-1]["epochs_used"]) if history else 0.0
    notes = [] if result.met_budget else ["budget missed: best attempt written"]
    if result.report.get("grew"):
        notes.append("grew")
    row = Row(method, epochs=round(start_epochs + used, 3), wall_s=round(wall, 2),
              wall_s_total=round(start_wall + wall, 2), met_budget=result.met_budget, notes="; ".join(notes),
              seed=ctx.seed, **measure_file(output, ctx))
    return row


def run_han(ctx: Context) -> Row:
    """Han et al. 2015: per-layer magnitude pruning on a fixed schedule, retraining after each round."""
    s = ctx.settings
    output = ctx.output("han")
    started = time.perf_counter()
    result = han_pruning(str(_dense(ctx)), str(output), ctx.data, ctx.train_config(), s.max_acc_drop,
                         s.compress_epochs)
    wall = time.perf_counter() - started
    curve = ", ".join(f"{n:,} at {acc:.2%}" for n, acc in result.history)
    notes = [f"{len(result.history)} rounds of {ROUND_FRACTION:.0%} per layer; non-zero weights after each: {curve}"]
    if not result.met_budget:
        notes.append("budget missed: best attempt written")
    return Row(HAN_ROW, epochs=round(s.dense_epochs + result.epochs, 3), wall_s=round(wall, 2),
               wall_s_total=round(ctx.dense_wall + wall, 2), met_budget=result.met_budget, notes="; ".join(notes),
               seed=ctx.seed, **measure_file(output, ctx))


def run_pruning_only(ctx: Context) -> Row:
    """The ablation: nestc's own adaptive pruning schedule with everything NeST adds switched off.

    Same pruning schedule, budget and epochs as ``nestc (dense)``, with growth, grow-and-prune cycles,
    regrowth, partial-area convolution and distillation switched off.
    """
    s = ctx.settings
    config = nestc.NestConfig(max_acc_drop=s.max_acc_drop, max_epochs=s.compress_epochs, grow="off",
                              grow_prune_cycles=0, regrow_fraction=0.0, partial_area_gamma=0.0, distill=False)
    return compress_row(ctx, ABLATION_ROW, _dense(ctx), config, s.dense_epochs, ctx.dense_wall)


def run_nestc_dense(ctx: Context, max_acc_drop: float, unit_fraction: float = 0.0) -> Row:
    """nestc's flow from the trained dense model within ``max_acc_drop`` points (default schedule,
    plus ``unit_prune_fraction`` when ``unit_fraction`` is set)."""
    s = ctx.settings
    config = nestc.NestConfig(max_acc_drop=max_acc_drop, max_epochs=s.compress_epochs,
                              unit_prune_fraction=unit_fraction)
    units = f", units {unit_fraction:g}" if unit_fraction else ""
    return compress_row(ctx, f"nestc (dense, drop {max_acc_drop:g}{units})", _dense(ctx), config, s.dense_epochs,
                        ctx.dense_wall)


def run_nestc_seed(ctx: Context) -> Row:
    """nestc from a NeST seed (narrow and sparse), growth on, with the whole epoch budget."""
    s = ctx.settings
    seed_path = ctx.workdir / f"{s.model}.seed.onnx"
    nestc.seed(s.model, seed_path, width_ratio=s.plan.seed_width, density=s.plan.seed_density)
    config = nestc.NestConfig(max_acc_drop=s.max_acc_drop, max_epochs=s.dense_epochs + s.compress_epochs,
                              grow="auto")
    row = compress_row(ctx, f"nestc (seed, drop {s.max_acc_drop:g})", seed_path, config, 0.0, 0.0)
    row.notes = "; ".join(filter(None, [f"seed width {s.plan.seed_width:g}, density {s.plan.seed_density:g}",
                                        row.notes]))
    return row


def run_onnxsim(ctx: Context, kind: str, sparsity: float) -> Row:
    """onnxsim's ``apply_<kind>_pruning`` of the dense model, then ``apply_pruning_finetune``."""
    import onnxsim

    prune = {"magnitude": onnxsim.apply_magnitude_pruning, "structured": onnxsim.apply_structured_pruning}[kind]
    dense_path = _dense(ctx)
    output = ctx.workdir / f"{ctx.settings.model}.onnxsim_{kind}_{sparsity:g}.onnx"
    started = time.perf_counter()
    pruned = prune(onnx.load(str(dense_path)), sparsity=sparsity)
    pruned_bytes = pruned.SerializeToString()  # the finetune may change ``pruned`` in place
    calibration = [{ctx.input_name: batch} for batch in ctx.calibration]
    tuned = onnxsim.apply_pruning_finetune(onnx.load(str(dense_path)), pruned, calibration_data=calibration)
    wall = time.perf_counter() - started
    onnx.save(tuned, str(output))
    before = ort_accuracy(pruned_bytes, ctx.x_test, ctx.y_test, ctx.settings.threads)
    changed = changed_weights(onnx.load_from_string(pruned_bytes), tuned)
    notes = [f"acc before finetune {before:.2%}",
             f"finetune changed {changed} weight tensor(s)" if changed else "finetune changed no weight"]
    unused = unused_initializers(tuned)
    if unused:
        notes.append(f"{unused} unused initializer(s) left in the file")
    return Row(f"onnxsim {kind} s={sparsity:g} + finetune", epochs=ctx.settings.dense_epochs, wall_s=round(wall, 2),
               wall_s_total=round(ctx.dense_wall + wall, 2), notes="; ".join(notes), **measure_file(output, ctx))


def _dense(ctx: Context) -> Path:
    if ctx.dense_path is None:
        raise RuntimeError("the dense baseline failed, so there is nothing to compress")
    return ctx.dense_path


def changed_weights(before: onnx.ModelProto, after: onnx.ModelProto) -> int:
    """How many initializers of ``after`` differ from the same-named one in ``before``."""
    old = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    count = 0
    for tensor in after.graph.initializer:
        new = numpy_helper.to_array(tensor)
        ref = old.get(tensor.name)
        if ref is None or ref.shape != new.shape or not np.array_equal(ref, new):
            count += 1
    return count


def unused_initializers(model: onnx.ModelProto) -> int:
    """Initializers no node of the main graph reads (they still take file space)."""
    used = {name for node in model.graph.node for name in node.input}
    used.update(o.name for o in model.graph.output)
    return sum(1 for t in model.graph.initializer if t.name not in used)


# ------------------------------------------------------------------------------------------- run


def run_model(settings: Settings, workdir: Path, log: Callable[[str], None] = print) -> dict:
    """Run every method for one model and return the JSON payload (rows, targets, settings)."""
    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = prepare_data(settings, workdir)
    train_samples = _train_count(spec)
    # unset, every method gets the budget compress would choose for this data (the payload keeps the request)
    budget = nestc.NestConfig(max_epochs=settings.compress_epochs).epoch_budget(train_samples)
    probe = workdir / f"{settings.model}.shape.onnx"
    nestc.seed(settings.model, probe)
    x_test, y_test, calibration, input_name = evaluation_tensors(spec, probe, settings.calibration_batches,
                                                                 settings.calibration_batch_size)
    ctx = Context(replace(settings, compress_epochs=budget), workdir, spec, x_test, y_test, calibration, input_name,
                  log=log)
    rows = [guarded("dense", ctx, lambda: run_dense(ctx))]
    rows.append(replicated(HAN_ROW, ctx, lambda: run_han(ctx)))
    rows.append(replicated(ABLATION_ROW, ctx, lambda: run_pruning_only(ctx)))
    for kind in settings.onnxsim_kinds:
        for sparsity in settings.sparsities:
            rows.append(guarded(f"onnxsim {kind} s={sparsity:g} + finetune", ctx,
                                lambda k=kind, s=sparsity: run_onnxsim(ctx, k, s)))
    drop = settings.max_acc_drop
    rows.append(replicated(f"nestc (dense, drop {drop:g})", ctx, lambda: run_nestc_dense(ctx, drop)))
    rows.append(replicated(f"nestc (dense, drop {drop:g}, units {UNIT_FRACTION:g})", ctx,
                           lambda: run_nestc_dense(ctx, drop, UNIT_FRACTION)))
    rows.append(replicated(f"nestc (seed, drop {drop:g})", ctx, lambda: run_nestc_seed(ctx)))
    if settings.curve:
        for curve_drop in settings.curve_drops:
            rows.append(replicated(f"nestc (dense, drop {curve_drop:g})", ctx,
                                   lambda d=curve_drop: run_nestc_dense(ctx, d)))
    measure_latencies(rows, ctx)
    fill_ratios(rows)
    return {
        "model": settings.model,
        "settings": asdict(settings),
        "data": {"spec": settings.data, "train_samples": train_samples, "test_samples": len(y_test),
                 "compress_epochs": budget},
        "machine": machine_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in rows],
        "targets": check_targets(settings.model, rows),
    }


def _train_count(spec: str) -> int:
    return len(load_dataset(spec).x_train)


# --------------------------------------------------------------------------------------- targets


def check_targets(model: str, rows: Sequence[Row]) -> list[dict]:
    """The issue's targets for ``model``, computed from the rows (never hard-coded as met).

    The nestc row judged is the one with the fewest non-zero parameters among the nestc rows whose
    test accuracy is at most :data:`BUDGET_POINTS` below the dense baseline's; every target is
    reported, as missed when there is no such row.
    """
    goals = TARGETS.get(model, {})
    names = {"compression": f">= {goals.get('compression', 0):g}x fewer params",
             "mac_reduction": f">= {goals.get('mac_reduction', 0):g}x fewer MACs",
             "vs_pruning_only": f">= {goals.get('vs_pruning_only', 0):g}x fewer params than pruning only",
             "latency_b256_ratio": f"ORT latency at batch 256 <= {goals.get('latency_b256_ratio', 0):g}x dense"}

    def labels(key: str) -> list[str]:  # one target line per pruning-only row
        if key != "vs_pruning_only":
            return [names[key]]
        return [f"{names[key]}, {short}" for short in PRUNING_ROWS.values()]

    dense = next((r for r in rows if r.method == "dense" and r.error is None), None)
    floor = -1.0 if dense is None else dense.accuracy - BUDGET_POINTS / 100
    eligible = [r for r in rows if r.method.startswith("nestc") and r.error is None and r.accuracy >= floor - 1e-12]
    best = min(eligible, key=lambda r: r.nonzero_params, default=None)
    if dense is None or best is None:
        why = "no dense baseline" if dense is None else (
            f"no nestc row within {BUDGET_POINTS} points of dense ({dense.accuracy:.2%})")
        return [_check(label, None, False, why) for key in goals for label in labels(key)]
    chosen = f"{best.method}: {best.accuracy:.2%} vs dense {dense.accuracy:.2%}"
    checks = []
    for key, goal in goals.items():
        if key == "compression":
            checks.append(_check(names[key], best.compression, best.compression >= goal, chosen))
        elif key == "mac_reduction":
            checks.append(_check(names[key], best.mac_reduction, best.mac_reduction >= goal, chosen))
        elif key == "vs_pruning_only":
            checks.extend(_vs_pruning(label, method, rows, floor, goal)
                          for label, method in zip(labels(key), PRUNING_ROWS, strict=True))
        elif key == "latency_b256_ratio":
            ratio = best.latency_b256_ms / dense.latency_b256_ms
            checks.append(_check(names[key], round(ratio, 3), ratio <= goal,
                                 f"{chosen}; {best.latency_b256_ms:.3f} ms vs {dense.latency_b256_ms:.3f} ms"))
    return checks


def _vs_pruning(name: str, method: str, rows: Sequence[Row], floor: float, goal: float) -> dict:
    """The ``method`` row's non-zeros over nestc's, at the same accuracy.

    "Same accuracy": the nestc row judged is the smallest one that is within the dense budget and at
    most :data:`BUDGET_POINTS` below the pruning row's test accuracy.
    """
    pruning = next((r for r in rows if r.method == method and r.error is None), None)
    if pruning is None:
        return _check(name, None, False, f"{method} failed")
    level = max(floor, pruning.accuracy - BUDGET_POINTS / 100)
    eligible = [r for r in rows if r.method.startswith("nestc") and r.error is None and r.accuracy >= level - 1e-12]
    best = min(eligible, key=lambda r: r.nonzero_params, default=None)
    if best is None:
        return _check(name, None, False, f"no nestc row within {BUDGET_POINTS} points of {method} "
                                         f"({pruning.accuracy:.2%}) and of dense")
    ratio = pruning.nonzero_params / best.nonzero_params
    detail = (f"{method} {pruning.nonzero_params:,} non-zeros at {pruning.accuracy:.2%}, {best.method} "
              f"{best.nonzero_params:,} at {best.accuracy:.2%}")
    if pruning.accuracy < floor - 1e-12:
        detail += f"; {method} is more than {BUDGET_POINTS} points below dense"
    return _check(name, round(ratio, 2), ratio >= goal, detail)


def _check(target: str, value: float | None, met: bool, detail: str) -> dict:
    return {"target": target, "value": value, "met": bool(met), "detail": detail}


# ----------------------------------------------------------------------------------------- table


def _fmt(value: object, kind: str = "") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "x":
        return f"{value:.1f}x"
    if kind == "kb":
        return f"{value / 1024:,.0f}"
    if kind == "ms":
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("method", "method", ""), ("test acc", "accuracy", "pct"), ("params", "params", ""),
    ("non-zero", "nonzero_params", ""), ("compr.", "compression", "x"), ("MACs", "macs", ""),
    ("non-zero MACs", "nonzero_macs", ""), ("MAC red.", "mac_reduction", "x"), ("file KB", "file_bytes", "kb"),
    ("ORT b1 ms", "latency_b1_ms", "ms"), ("ORT b256 ms", "latency_b256_ms", "ms"), ("epochs", "epochs", ""),
    ("wall s", "wall_s", ""), ("wall s total", "wall_s_total", ""),
)


def format_table(rows: Sequence[dict]) -> str:
    """A markdown table of result rows (dicts as stored in the JSON); failures show their error."""
    lines = ["| " + " | ".join(c[0] for c in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(TABLE_COLUMNS))) + "|"]
    for row in rows:
        if row.get("error"):
            cells = [row["method"], f"failed: {row['error']}"] + ["–"] * (len(TABLE_COLUMNS) - 2)
        else:
            cells = [_fmt(row.get(key), kind) for _, key, kind in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    notes = [f"- {row['method']}: {row['notes']}" for row in rows if row.get("notes")]
    return "\n".join(lines + (["", *notes] if notes else []))


def format_targets(targets: Sequence[dict]) -> str:
    """One line per target: met or missed, the measured value and what it was measured on."""
    return "\n".join(f"- [{'met' if t['met'] else 'MISSED'}] {t['target']}: {_fmt(t.get('value'))} ({t['detail']})"
                     for t in targets)


def result_name(settings: dict) -> str:
    """``<model>.json`` (full), ``<model>-quick.json``, ``<model>-<data>.json`` for the full table on another data
    set, or ``<model>-debug.json`` when a debug limit changed the mode's defaults (so a debug run never passes for
    a real one)."""
    defaults = asdict(settings_for(settings["model"], settings["quick"]))
    keys = ("limit", "test_limit", "dense_epochs", "compress_epochs", "sparsities", "onnxsim_kinds")
    debug = any(json.dumps(settings[k]) != json.dumps(defaults[k]) for k in keys)
    other_data = settings["data"] != defaults["data"]
    suffix = "-debug" if debug else f"-{Path(settings['data']).stem}" if other_data else ""
    return f"{settings['model']}{suffix}{'-quick' if settings['quick'] and not debug else ''}.json"


def write_result(payload: dict, out: Path) -> Path:
    """Write the payload to ``<out>/`` :func:`result_name` and return the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / result_name(payload["settings"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def render(payload: dict) -> str:
    """The printed summary of one model: header, table, target checks."""
    s, m = payload["settings"], payload["machine"]
    budget = payload["data"].get("compress_epochs", s["compress_epochs"])  # older payloads stored it in settings
    head = (f"## {payload['model']}{' (quick)' if s['quick'] else ''}: {payload['data']['train_samples']:,} "
            f"training / {payload['data']['test_samples']:,} test samples, dense {s['dense_epochs']:g} epochs + "
            f"compress {budget:g}; {m['cpu']}, {m['cores']} cores; {payload['total_seconds']:.0f} s")
    return "\n\n".join([head, format_table(payload["rows"]), "Targets:\n" + format_targets(payload["targets"])])


# ------------------------------------------------------------------------------------------- CLI


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the debug limits override the quick/full defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_LIMIT:,} training samples, fewer epochs")
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--models", default=",".join(PLANS), help="comma-separated: " + ", ".join(PLANS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--data", default="fashion-mnist",
                        help=f"data spec (embedded for a self-contained check; {SKLEARN_DIGITS}: scikit-learn's digits "
                             "at 28x28)")
    parser.add_argument("--curve", action="store_true",
                        help=f"also nestc from dense at max-acc-drop {', '.join(map(str, CURVE_DROPS))} (full runs)")
    parser.add_argument("--keep-models", type=Path, default=None,
                        help="folder to keep the ONNX files in (default: a temporary folder, deleted)")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--seeds", type=_ints, default=None,
                        help="training seeds of the methods after dense, e.g. 0,1,2 (rows: the median run)")
    parser.add_argument("--verbose", action="store_true", help="print training and schedule progress")
    debug = parser.add_argument_group("debug limits (override the mode's defaults)")
    debug.add_argument("--limit", type=int, default=None, help="training samples")
    debug.add_argument("--test-limit", type=int, default=None, help="test samples")
    debug.add_argument("--dense-epochs", type=float, default=None)
    debug.add_argument("--compress-epochs", type=float, default=None)
    debug.add_argument("--sparsities", type=_floats, default=None, help="onnxsim sparsities, e.g. 0.5,0.9")
    debug.add_argument("--latency-repeats", type=int, default=None)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in PLANS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(PLANS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the table for every requested model; 0 when every row ran (targets are reported, not enforced)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed run still removes its temp folder
    failures = 0
    for model in args.models.split(","):
        settings = settings_for(model, args.quick, data=args.data, limit=args.limit, test_limit=args.test_limit,
                                dense_epochs=args.dense_epochs, compress_epochs=args.compress_epochs,
                                device=args.device, curve=args.curve or None, sparsities=args.sparsities,
                                threads=args.threads, seeds=args.seeds, latency_repeats=args.latency_repeats,
                                verbose=args.verbose or None)
        if args.keep_models is not None:
            workdir = args.keep_models / model
            payload = run_model(settings, workdir)
        else:
            workdir = Path(tempfile.mkdtemp(prefix=f"nest_table_{model}_"))
            try:
                payload = run_model(settings, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        path = write_result(payload, args.out)
        print(render(payload))
        print(f"\nwrote {path}\n")
        failures += sum(1 for row in payload["rows"] if row["error"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
