"""The ``nestc`` command line: thin wrappers over :mod:`nestc.api`.

Every user mistake surfaces as a :class:`~nestc.errors.NestcError`; :func:`main` prints it as one
line (``nestc: error: ...``) and exits with its code (2 for bad input). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from fractions import Fraction
from typing import NoReturn

import click

from nestc.errors import NestcError, one_line
from nestc.report import json_text

MODEL = click.Path(dir_okay=True, path_type=str)

LOST_ACCURACY = 0.02
"""Test accuracy ``train`` may lose before it says so: retraining a trained model at a rate meant for a
fresh one, or on raw-pixel inputs, can wreck it while the loss stays finite."""

POSITIVE = click.FloatRange(0, min_open=True)
POSITIVE.name = "float"  # click would say "'abc' is not a valid float range"


class _Separated(click.ParamType):
    """A comma-separated tuple of values, each read by ``parse``; a bad one fails naming what to give.

    ``x`` separates too where ``by_x`` (``3x32x32``, as image sizes are often written).
    """

    def __init__(self, name: str, parse: Callable[[str], object], expected: str, by_x: bool = False) -> None:
        self.name, self.parse, self.expected, self.by_x = name, parse, expected, by_x

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).replace("x", ",") if self.by_x else str(value)
        try:
            return tuple(self.parse(part) for part in text.split(","))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r}: give {self.expected}", param, ctx)


NUMBERS = _Separated("numbers", lambda part: float(Fraction(part.strip())),
                     "numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406 or 1/255")
"""Finite numbers; fractions such as ``1/255`` are allowed (raw-pixel models)."""
SIZES = _Separated("sizes", int, "whole numbers separated by commas, e.g. 3,32,32", by_x=True)
"""Whole sizes (``3,32,32``, ``3x32x32``); their range is the API's to check."""


def _normalisation_options(func):
    """--mean and --std: the input normalisation a model was trained under, when nestc should not choose."""
    func = click.option("--std", type=NUMBERS, default=None,
                        help="Per-channel std the model's inputs were divided by; goes with --mean.")(func)
    return click.option("--mean", type=NUMBERS, default=None,
                        help="Per-channel mean subtracted from the model's inputs, on the [0, 1] pixel scale "
                             "(0.485,0.456,0.406; raw 0-255 pixels: --mean 0 --std 1/255) [default: recorded "
                             "in a file nestc wrote, else the candidate the model scores best under].")(func)


class _Group(click.Group):
    """The command group; a Ctrl-C or SIGTERM inside a command ends it as :func:`main` says.

    click turns an interrupt inside a command into a blank stderr line and ``Abort``, which forgets
    which signal it was: SIGTERM (a CI runner's timeout) in ``eval`` or ``validate`` ended with exit 130
    and "interrupted", where compress and train say "terminated (SIGTERM)" and exit 143.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            _exit_stopped(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nestc")
def cli() -> None:
    """nestc, the NeST compiler: grow and prune ONNX models, ONNX in, ONNX out."""


@cli.command()
@click.argument("model", type=MODEL)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (totals under params, nonzero_params, macs).")
def inspect(model: str, as_json: bool) -> None:
    """Per-layer weights, non-zeros and MACs per sample of MODEL."""
    from nestc import api
    from nestc.stats import format_table
    stats = api.inspect(model)
    click.echo(json_text(stats.to_dict()) if as_json else format_table(stats))


@cli.command()
@click.argument("original", type=MODEL)
@click.argument("candidate", type=MODEL)
@click.option("--data", default=None,
              help="Test split to feed, as for eval (mnist, fashion-mnist, kmnist, cifar10, cifar100, embedded, a "
                   ".npz or .csv file or an image folder) [default: seeded random inputs].")
@click.option("--data-dir", default=None, help="Folder holding data sets (also $NESTC_DATA).")
@click.option("--download", is_flag=True, help="Fetch a named data set (checksums verified).")
@click.option("--atol", default=1e-5, show_default=True, type=float,
              help="Outputs agree where |a - b| <= atol + rtol * |a| (a: the original's).")
@click.option("--rtol", default=1e-4, show_default=True, type=float, help="See --atol.")
@click.option("--samples", default=64, show_default=True, type=int, help="Number of inputs to compare on.")
@_normalisation_options
def validate(original: str, candidate: str, data: str | None, data_dir: str | None, download: bool, atol: float,
             rtol: float, samples: int, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> None:
    """Run ORIGINAL and CANDIDATE in onnxruntime on the same inputs; exit 1 when they differ."""
    from nestc import api
    report = api.validate(original, candidate, data, atol, rtol, samples, data_dir, mean=mean, std=std,
                          download=download)
    for diff in report.outputs:
        status = "ok" if diff.within else "DIFFERS"
        click.echo(f"{diff.name}: max abs diff {diff.max_abs:.3g}, max rel diff {diff.max_rel:.3g} [{status}]")
    if report.accuracy_original is not None:
        click.echo(f"accuracy on {report.samples} samples: original {report.accuracy_original:.2%}, "
                   f"candidate {report.accuracy_candidate:.2%}")
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("model", type=MODEL)
@click.option("-o", "--output", required=True, help="Where to write the compacted model.")
@click.option("--round-to", default=1, show_default=True, type=int,
              help="A convolution's width above 4 units is a multiple of N (4 or fewer, and fully connected "
                   "widths, are free).")
@click.option("--sparse-format", default="dense", show_default=True, type=click.Choice(["dense", "coo"]),
              help="coo: store weights as sparse initializers where that is smaller (smaller file, same speed).")
def compact(model: str, output: str, round_to: int, sparse_format: str) -> None:
    """Remove every provably dead neuron and channel of MODEL."""
    from nestc import api
    report = api.compact(model, output, round_to, sparse_format)
    click.echo(f"params {report.before.params:,} -> {report.after.params:,}   "
               f"non-zero {report.before.nonzero_params:,} -> {report.after.nonzero_params:,}   "
               f"MACs {report.before.macs:,} -> {report.after.macs:,}")
    for origin, width in report.result.widths.items():
        removed = report.result.removed.get(origin, 0)
        click.echo(f"  {origin}: width {width + removed} -> {width}")
    click.echo(f"wrote {output}")


def _data_options(func):
    """--data, --data-dir and --download, shared by every command that reads data."""
    func = click.option("--download", is_flag=True, help="Fetch a named data set (checksums verified).")(func)
    func = click.option("--data-dir", default=None, help="Folder holding data sets (also $NESTC_DATA).")(func)
    return click.option("--data", default="embedded", show_default=True,
                        help="mnist, fashion-mnist, kmnist, cifar10, cifar100, embedded, a .npz or .csv file or an "
                             "image folder.")(func)


def _train_options(func):
    """Optimiser and device options, shared by train and compress."""
    for decorator in reversed([
        click.option("--epochs", default=None, type=POSITIVE,
                     help="train: epochs [default: 10]. compress: epochs of each growth step, of a seed's or "
                          "untrained model's training steps and of each grow-and-prune cycle [default: 2, and "
                          "100,000 samples' worth for the growth phase when that is more]."),
        click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1),
                     help="Global batch (split over torchrun processes)."),
        click.option("--lr", default=0.05, show_default=True, type=POSITIVE,
                     help="Learning rate at the start of every fit (cosine decay inside it)."),
        click.option("--weight-decay", default=5e-4, show_default=True, type=click.FloatRange(0),
                     help="L2 penalty of SGD (decoupled for adam)."),
        click.option("--grad-clip", default=None, type=POSITIVE,
                     help="Clip the gradient norm to this before every step (for training that diverges)."),
        click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]),
                     help="sgd: SGD with Nesterov momentum 0.9; adam: AdamW."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "off"]),
                     help="bf16 autocast of training's forward passes (evaluation stays float32); auto: on GPUs "
                          "with native bf16 (Ampere or newer); bf16: also on CPUs (where it is usually slower)."),
        click.option("--seed", "seed_value", default=0, show_default=True, type=int,
                     help="Seed of data order, initialisation of grown units and every random choice."),
        click.option("--quiet", is_flag=True, help="No progress bars and no log lines (errors still print)."),
        click.option("--output-name", default=None,
                     help="Graph output to train on (default: the one of class scores, [N, C] or [N, C, 1, 1])."),
    ]):
        func = decorator(func)
    return func


def _train_config(batch_size: int, lr: float, weight_decay: float, grad_clip: float | None, optimizer: str,
                  device: str, amp: str, seed_value: int, quiet: bool, epochs: float | None = None):
    from nestc.training import TrainConfig

    config = TrainConfig(batch_size=batch_size, lr=lr, optimizer=optimizer, device=device, amp=amp, seed=seed_value,
                         quiet=quiet, weight_decay=weight_decay, grad_clip=grad_clip)
    if epochs is not None:
        config.epochs = epochs
    config.validate()
    return config


@cli.command()
@click.argument("model", type=MODEL)
@click.option("-o", "--output", required=True, help="Where to write the trained model.")
@_data_options
@_normalisation_options
@_train_options
@click.option("--checkpoint", default=None, help="Checkpoint file written every epoch.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
def train(model: str, output: str, data: str, data_dir: str | None, download: bool, mean: tuple[float, ...] | None,
          std: tuple[float, ...] | None, epochs: float | None, batch_size: int, lr: float, weight_decay: float,
          grad_clip: float | None, optimizer: str, device: str, amp: str, seed_value: int, quiet: bool,
          output_name: str | None, checkpoint: str | None, resume: bool) -> None:
    """Train all weights of MODEL on --data and write it to -o."""
    from nestc import api

    config = _train_config(batch_size, lr, weight_decay, grad_clip, optimizer, device, amp, seed_value, quiet,
                           10 if epochs is None else epochs)
    existing = _file_stamp(output)
    try:
        # the progress bar is drawn on a terminal's stderr; a CI log gets a line per epoch instead, where
        # compress writes its step lines
        log = None if quiet or sys.stderr.isatty() else click.echo
        before, after = api.train(model, output, data, config, data_dir, download, output_name, checkpoint, resume,
                                  mean=mean, std=std, log=log)
    except KeyboardInterrupt as exc:
        if _file_stamp(output) != existing:  # interrupted while the written file's accuracy was measured
            stopped, code = _stop(exc)
            click.echo(f"nestc: {stopped} after {output} was written, before its test accuracy was measured",
                       err=True)
            sys.exit(code)
        _interrupted(exc, checkpoint, "epoch")
    from nestc.training import init_from_env

    if after is None and init_from_env().is_main:  # under torchrun only rank 0 measures; it says it wrote
        click.echo(f"wrote {output}; test accuracy not measured: the test split of '{data}' has no labels")
    if after is not None:
        click.echo(f"test accuracy (onnxruntime): {before:.2%} -> {after:.2%}; wrote {output}")
        if before is not None and after < before - LOST_ACCURACY:
            click.echo(f"note: training lost {100 * (before - after):.1f} points of test accuracy at --lr {lr:g}; "
                       "a trained model, or inputs on a larger scale (raw 0-255 pixels), usually needs a lower "
                       "rate (e.g. --lr 0.005)", err=True)


@cli.command(name="eval")
@click.argument("model", type=MODEL)
@_data_options
@_normalisation_options
@click.option("--batch-size", default=256, show_default=True, type=int,
              help="Inference batch, and the batch whose latency is measured.")
@click.option("--output-name", default=None, help="Graph output holding class scores.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_(model: str, data: str, data_dir: str | None, download: bool, mean: tuple[float, ...] | None,
          std: tuple[float, ...] | None, batch_size: int, output_name: str | None, as_json: bool) -> None:
    """Accuracy, loss and latency of MODEL on the test split, measured by onnxruntime."""
    from nestc import api
    from nestc.input_record import describe_values
    report = api.evaluate(model, data, data_dir, download, batch_size, output_name, mean, std)
    if as_json:
        click.echo(json_text(asdict(report)))
        return
    accuracy = "n/a (no labels)" if report.accuracy is None else f"{report.accuracy:.2%}"
    loss = "n/a" if report.loss is None else f"{report.loss:.4f}"
    click.echo(f"{report.samples} samples: accuracy {accuracy}, loss {loss}, "
               f"{report.latency_ms_per_batch:.3f} ms per batch of {report.batch_size} (onnxruntime)")
    norm = report.input_normalisation
    fitted = f"; images fitted to the model: {report.input_fit}" if report.input_fit else ""
    click.echo(f"inputs: mean {describe_values(norm['mean'])}, std {describe_values(norm['std'])}{fitted}")


@cli.command()
@click.argument("arch", type=click.Choice(["lenet-300-100", "lenet-5", "vgg16", "resnet18"]))
@click.option("-o", "--output", required=True, help="Where to write the seed.")
@click.option("--width-ratio", default=1.0, show_default=True, type=float,
              help="Scale of hidden widths, in (0, 4]; a NeST seed is narrow (0.4-0.5).")
@click.option("--density", default=1.0, show_default=True, type=float,
              help="Share of connections kept, in (0, 1]; below 0.5 compress grows the seed (0.1 in the paper).")
@click.option("--classes", default=10, show_default=True, type=int, help="Width of the class-score output.")
@click.option("--input-shape", type=SIZES, default=None,
              help="Channels, height and width of the input images, e.g. 3,32,32 for CIFAR [default: 1,28,28 "
                   "for the LeNets, 3,32,32 for vgg16 and resnet18].")
@click.option("--seed", "seed_value", default=0, show_default=True, type=int,
              help="Seed of the random weights and connections.")
def seed(arch: str, output: str, width_ratio: float, density: float, classes: int,
         input_shape: tuple[int, ...] | None, seed_value: int) -> None:
    """Write a seed architecture (the NeST paper's) as ONNX."""
    from nestc import api
    stats = api.seed(arch, output, width_ratio, density, classes, seed_value, input_shape)
    click.echo(f"{arch}: {stats.params:,} params ({stats.nonzero_params:,} non-zero), {stats.macs:,} MACs; "
               f"wrote {output}")


@cli.command()
@click.argument("model", type=MODEL)
@click.option("-o", "--output", required=True, help="Where to write the compressed model.")
@_data_options
@_normalisation_options
@_train_options
@click.option("--report", default=None, help="JSON report path.")
@click.option("--plot", default=None, help="PNG of the network's evolution.")
@click.option("--max-acc-drop", default=0.5, show_default=True, type=float,
              help="Accuracy budget: percentage points below the reference (a trained original; else the "
                   "network nestc trained or grew from it), on the --validation data.")
@click.option("--target-params", default=None, type=int, help="Stop once non-zero parameters reach this.")
@click.option("--max-epochs", default=None, type=float,
              help="Training epochs for the whole run [default: 40, or 2,000,000 training samples' worth when that "
                   "is more: a small training split gets more, shorter epochs].")
@click.option("--time-budget", default=None, type=float,
              help="Seconds for the whole run, loading included; checked between steps (the step in progress "
                   "finishes). A --resume run gets it afresh, as a CI job's time limit would.")
@click.option("--grow", default="auto", show_default=True, type=click.Choice(["auto", "on", "off"]),
              help="Growth phase; auto: for sparse seeds. An untrained model is trained before pruning "
                   "either way.")
@click.option("--prune-fraction", default=0.2, show_default=True, type=float,
              help="Share of active connections pruned per step (halved after an undone step).")
@click.option("--max-prune-fraction", default=None, type=float,
              help="Largest step: a step that cost no accuracy makes the next 1.5x larger, up to this "
                   "[default: 0.5, or --prune-fraction when larger].")
@click.option("--grow-prune-cycles", default=3, show_default=True, type=int,
              help="Times in a row a stalled pruning phase regrows connections by gradient and prunes "
                   "again without finding a smaller network (a cycle that finds one resets the count).")
@click.option("--cycle-growth", default=0.5, show_default=True, type=float,
              help="Connections regrown per cycle, relative to the active count.")
@click.option("--regrow-fraction", default=0.0, show_default=True, type=float,
              help="Share of each pruning step regrown by gradient (RigL-style; measured to cost compression).")
@click.option("--unit-prune-fraction", default=0.0, show_default=True, type=float,
              help="Share of live neurons / feature maps removed per pruning step, by magnitude (for speed).")
@click.option("--distill", is_flag=True, help="Distil from the original model while retraining.")
@click.option("--batch-norm", default="auto", show_default=True, type=click.Choice(["auto", "on", "off"]),
              help="Train every Conv without a BatchNormalization after it with one (exporters fold them into the "
                   "convolutions), folded back in the output; auto: when the learning-rate check trains the model "
                   "clearly better with it.")
@click.option("--partial-area-gamma", default=0.0, show_default=True, type=float,
              help="Share of conv input positions masked per pruning step (partial-area convolution).")
@click.option("--round-to", default=16, show_default=True, type=int,
              help="A convolution's width above 4 units is a multiple of N (onnxruntime's blocked convolutions "
                   "need 16 on AVX-512, 8 on AVX2; fully connected widths are free); 1: no rounding.")
@click.option("--lr-check-epochs", default=None, type=float,
              help="Fine-tune a copy of a trained model this long first; lower --lr while it loses accuracy. 0: off "
                   "[default: 0.25, or 12,500 samples' worth when that is more, up to a sixteenth of the budget].")
@click.option("--retrain-epochs", default=1.0, show_default=True, type=float,
              help="Retraining after every pruning step (one more before a step that missed is undone).")
@click.option("--birth-strength", default=0.5, show_default=True, type=float,
              help="The paper's alpha: scale of a grown neuron's weights (growth only).")
@click.option("--validation", default="test", show_default=True, type=click.Choice(["test", "train"]),
              help="Data for decisions: the test split, or a held-out part of the training split.")
@click.option("--sparse-format", default="dense", show_default=True, type=click.Choice(["dense", "coo"]),
              help="coo: store weights as sparse initializers where that is smaller (smaller file, same speed).")
@click.option("--limit", default=None, type=int, help="Use at most this many training samples.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUTPUT.ckpt.")
def compress(model: str, output: str, data: str, data_dir: str | None, download: bool,
             mean: tuple[float, ...] | None, std: tuple[float, ...] | None, epochs: float | None,
             batch_size: int, lr: float, weight_decay: float, grad_clip: float | None, optimizer: str, device: str,
             amp: str, seed_value: int, quiet: bool, output_name: str | None, report: str | None, plot: str | None,
             max_acc_drop: float, target_params: int | None, max_epochs: float | None, time_budget: float | None,
             grow: str, prune_fraction: float, max_prune_fraction: float | None, grow_prune_cycles: int,
             cycle_growth: float, regrow_fraction: float, unit_prune_fraction: float, distill: bool,
             batch_norm: str, partial_area_gamma: float, round_to: int, lr_check_epochs: float | None,
             retrain_epochs: float, birth_strength: float, validation: str, sparse_format: str, limit: int | None,
             resume: bool) -> None:
    """Grow and prune MODEL with NeST on --data; exit 3 when no model met the accuracy budget."""
    from nestc.compression import compress as run_compress
    from nestc.schedule.config import NestConfig

    config = NestConfig(max_acc_drop=max_acc_drop, target_params=target_params, max_epochs=max_epochs,
                        time_budget=time_budget, grow=grow, prune_fraction=prune_fraction,
                        grow_prune_cycles=grow_prune_cycles, cycle_growth=cycle_growth,
                        regrow_fraction=regrow_fraction, unit_prune_fraction=unit_prune_fraction, distill=distill,
                        batch_norm=batch_norm, partial_area_gamma=partial_area_gamma, round_to=round_to,
                        lr_check_epochs=lr_check_epochs,
                        retrain_epochs=retrain_epochs, birth_strength=birth_strength, validation=validation,
                        max_prune_fraction=max_prune_fraction)
    if epochs is not None:
        config.grow_epochs = epochs
    train_config = _train_config(batch_size, lr, weight_decay, grad_clip, optimizer, device, amp, seed_value, quiet)
    log = (lambda _line: None) if quiet else click.echo
    try:
        result = run_compress(model, output, data, config, train_config, report, plot, sparse_format, data_dir,
                              download, limit, output_name, resume, log=log, mean=mean, std=std)
    except KeyboardInterrupt as exc:
        _interrupted(exc, f"{output}.ckpt", "step")
    from nestc.training import init_from_env

    if init_from_env().is_main:  # under torchrun every rank has the result; one prints it
        _print_summary(result.report)
    if not result.met_budget:
        click.echo(f"nestc: no model met the accuracy budget; wrote the best attempt to {output}", err=True)
    target = result.report["target_params"]
    if target is not None and not target["reached"]:
        click.echo(f"nestc: --target-params {target['requested']:,} not reached: the smallest model within the "
                   f"accuracy budget has {result.report['nonzero_params']['after']:,} non-zero parameters", err=True)
    sys.exit(result.exit_code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner's timeout, ``kill``), raised where Ctrl-C raises :class:`KeyboardInterrupt`.

    Python's default for SIGTERM ends the process on the spot: no word on stderr, and a temporary file
    being written stays behind. Raised as an interrupt, it unwinds like Ctrl-C: temporary files removed,
    the checkpoint kept, one line on stderr; the exit code is 143 (128 + SIGTERM), as a shell reports it.
    """


def _terminate(_signum: int, _frame: object) -> NoReturn:
    raise Terminated


def _file_stamp(path: str) -> tuple[int, int] | None:
    """Inode and modification time of ``path`` (None when absent): an atomic write changes both."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _stop(exc: KeyboardInterrupt) -> tuple[str, int]:
    """How an interruption is named on stderr, and the exit code it gives."""
    return ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)


def _exit_stopped(exc: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C or SIGTERM in a command that writes nothing, or before it started writing: one line, 130 or 143."""
    stopped, code = _stop(exc)
    click.echo(f"nestc: {stopped}; no output was written", err=True)
    sys.exit(code)


def _interrupted(exc: KeyboardInterrupt, checkpoint: str | None, unit: str) -> NoReturn:
    """Ctrl-C or SIGTERM in a training command: one line that says no output was written and, when the
    run's checkpoint is on disk, how to go on from it (a bare "interrupted" left the user guessing)."""
    if checkpoint is None:
        _exit_stopped(exc)
    stopped, code = _stop(exc)
    if os.path.exists(checkpoint):
        click.echo(f"nestc: {stopped}; no output was written. The last finished {unit} is kept in {checkpoint}: "
                   "run the same command with --resume to continue", err=True)
    else:
        click.echo(f"nestc: {stopped} before the first {unit} finished; no output was written", err=True)
    sys.exit(code)


def _print_summary(report: dict) -> None:
    """The before/after table of a compression."""
    rows = [("params", "params"), ("non-zero params", "nonzero_params"), ("MACs", "macs"),
            ("non-zero MACs", "nonzero_macs"), ("file bytes", "file_bytes")]
    click.echo(f"{'':<18}{'before':>14}{'after':>14}{'ratio':>9}")
    for label, key in rows:
        before, after = report[key]["before"], report[key]["after"]
        click.echo(f"{label:<18}{before:>14,}{after:>14,}{before / max(after, 1):>8.1f}x")
    accuracy = report["accuracy"]
    if accuracy["before"] is not None:
        click.echo(f"{'test accuracy':<18}{accuracy['before']:>14.2%}{accuracy['after']:>14.2%}   (onnxruntime)")
    reference = report.get("reference_test_accuracy")
    if reference is not None and report["history"] and report["history"][0]["phase"] != "start":
        # a seed's budget refers to the network nestc trained and grew from it, not to the input
        click.echo(f"{'trained seed':<18}{'':>14}{reference:>14.2%}   (the budget's reference)")
    latency = report["ort_latency_ms"]
    for batch in latency["after"]:
        if batch in latency["before"]:
            click.echo(f"{'ms ' + batch.replace('_', ' '):<18}{latency['before'][batch]:>14.3f}"
                       f"{latency['after'][batch]:>14.3f}")
    click.echo(f"wrote {report['output']} in {report['seconds']:.0f} s")


DEMO_ACC_DROP = 1.0
"""The demo's accuracy budget, in points. On the embedded split's 500 test images the default half point is
two or three images, below the noise of one retraining: over training seeds 0-3 the demo ended at 4,687 to
14,717 non-zeros with it and 60 epochs (two runs above the seed's 10,101), at 1,415 to 4,531 with one point
and 200 epochs (1-4 s each on the CPU, with fully connected widths rounded to 4; free, seed 0 ends at 862)."""


@cli.command()
@click.option("-o", "--output", default="lenet-300-100.nest.onnx", show_default=True,
              help="Where to write the compressed model.")
@click.option("--quiet", is_flag=True, help="No step log: the seed line and the before/after table only.")
def demo(output: str, quiet: bool) -> None:
    """Seed LeNet-300-100, compress it on the embedded Fashion-MNIST subset (CPU), print the table."""
    import tempfile

    from nestc import api
    from nestc.compression import compress as run_compress
    from nestc.fileio import check_output_path
    from nestc.schedule.config import NestConfig
    from nestc.training import TrainConfig

    check_output_path(output)  # compress checks it too, but only after the seed line was printed
    with tempfile.TemporaryDirectory() as folder:
        seed_path = os.path.join(folder, "lenet-300-100.seed.onnx")
        stats = api.seed("lenet-300-100", seed_path, width_ratio=0.4, density=0.1)
        click.echo(f"seed: LeNet-300-100 at width 0.4, density 0.1: {stats.nonzero_params:,} non-zero params "
                   f"(dense LeNet-300-100: 266,610)")
        click.echo(f"budget: {DEMO_ACC_DROP:g} point under the grown seed's accuracy (the embedded test split has 500 "
                   "images: one is 0.2 points)")
        config = NestConfig(max_epochs=200, grow_epochs=4, retrain_epochs=2, recovery_epochs=2, grow_steps=4,
                            max_acc_drop=DEMO_ACC_DROP)
        train_config = TrainConfig(device="cpu", quiet=True, lr=0.05, weight_decay=1e-4)
        result = run_compress(seed_path, output, "embedded", config, train_config,
                              log=(lambda _line: None) if quiet else click.echo)
    _print_summary(result.report)


def main() -> None:
    """Console entry point: one line and an exit code for user errors, 130 on Ctrl-C, 143 on SIGTERM.

    Usage mistakes that click catches (an unknown option, ``--batch-size 0``) are printed as one
    ``nestc: error:`` line too, so CI logs and scripts see the same shape for every user error. A bare
    ``nestc`` is no such mistake: it gets the help, as it is, not squeezed into that line. Running out
    of memory is one too (exit 2): nestc's own allocations are small, the ones that fail are sized by
    the user's options, data and model.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(standalone_mode=False)
    except NestcError as exc:
        click.echo(f"nestc: error: {one_line(str(exc), limit=2000)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("nestc: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if isinstance(exc, click.UsageError) and ctx else ""
        click.echo(f"nestc: error: {one_line(exc.format_message(), limit=2000)}{hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _exit_stopped(exc)
    except MemoryError as exc:  # what was asked for (--samples 10**12, say) does not fit: no bug to trace
        click.echo(f"nestc: error: out of memory ({one_line(str(exc)) or 'MemoryError'}); ask for less: fewer "
                   "--samples, a smaller --batch-size or --limit, a smaller model", err=True)
        sys.exit(NestcError.exit_code)
