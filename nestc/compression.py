"""``compress``: import, grow and prune, emit, and prove the result with onnxruntime.

The emitted model is checked twice: its onnxruntime outputs must equal the trained network's (so
the file computes what was trained), and its accuracy on the test split is measured by onnxruntime
(so the reported figure is the deployable one). Outputs are written atomically; the input is never
touched.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from nestc import runtime
from nestc.data.load import data_files
from nestc.errors import DataError, OptionError, OutputError, PassError, about, require
from nestc.fileio import atomic_write_files, check_outputs, run_identity, uninterruptible
from nestc.frontends import load_model
from nestc.frontends.files import model_bytes, model_files
from nestc.frontends.precision import computes_in_half, stored_precision
from nestc.input_record import describe_values, record_input
from nestc.ir.classifier import ClassifierView, class_scores, trainable_view
from nestc.ir.emit import SPARSE_FORMATS, emit_model
from nestc.ir.network import Network
from nestc.model_data import (
    PROBE_SAMPLES,
    check_normalisation,
    data_for_model,
    is_trained,
    output_classes,
    split_validation,
    untrained_seed,
)
from nestc.passes.batch_norms import fold_batch_norms, insert_batch_norms, statistics_sample
from nestc.report import history_png, json_bytes
from nestc.schedule.config import NestConfig
from nestc.schedule.runner import NestRun, SplitData
from nestc.schedule.state import read_state
from nestc.stats import ModelStats, model_stats
from nestc.training import TrainConfig, Trainer
from nestc.training.data import stage

EXIT_BUDGET_MISSED = 3
HALF_TOLERANCE = 2e-2
"""Relative and absolute difference allowed between a float16 file and the float32 network: float16
keeps 11 significant bits (about 5e-4), and a layer's sum of hundreds of rounded products drifts
further; a wrongly emitted channel differs by the size of the activations themselves."""


@dataclass
class CompressResult:
    """What ``compress`` wrote and measured.

    ``report`` is the JSON written with ``--report``: ``accuracy`` (``before``/``after``, by onnxruntime on the
    test split), ``params``, ``nonzero_params``, ``macs``, ``nonzero_macs`` and ``file_bytes`` (each
    ``before``/``after``), ``compression`` (non-zero ratios), ``ort_latency_ms``, ``input_normalisation``,
    ``input_fit``, ``learning_rate``, ``target_params``, ``stopped_by``, ``max_epochs`` (the epoch budget),
    ``batch_norms_inserted`` (BatchNormalizations trained after Convs that had none, folded back in the file),
    ``layers_after`` (the rows of :class:`~nestc.stats.LayerStats`), ``history`` (one row per step, as the log),
    ``seconds``.
    """

    output: str
    """The written model's path, as given."""
    met_budget: bool
    """Whether the output keeps the accuracy budget; False: the best attempt was written."""
    report: dict

    @property
    def exit_code(self) -> int:
        """0 when the accuracy budget was met, 3 when only the best attempt could be written."""
        return 0 if self.met_budget else EXIT_BUDGET_MISSED


def compress(model: str | os.PathLike, output: str | os.PathLike, data: str | os.PathLike = "embedded",
             config: NestConfig | None = None, train_config: TrainConfig | None = None,
             report: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
             sparse_format: str = "dense", data_dir: str | os.PathLike | None = None, download: bool = False,
             limit: int | None = None, output_name: str | None = None, resume: bool = False,
             log: Callable[[str], None] | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> CompressResult:
    """Compress ``model`` with the NeST flow on ``data`` and write the result to ``output``.

    ``log``: receives the lines ``nestc compress`` prints (the input normalisation chosen, one line per
    step, what ended the run); ``log=print`` shows them. By default the call prints nothing, as the other
    API functions: the caller owns its stdout (a CI step may write JSON there).

    ``mean``/``std``: the input normalisation the model was trained under (per channel, on the [0, 1]
    pixel scale); by default the one recorded in a file nestc wrote, else, of the candidates the model
    classifies within a point as well under as under the best one, the one with the lowest loss
    (:mod:`nestc.model_data`). The output expects the same.
    """
    config = NestConfig() if config is None else config
    train_config = TrainConfig(quiet=True) if train_config is None else train_config
    for name, value, kind in (("config", config, NestConfig), ("train_config", train_config, TrainConfig)):
        if not isinstance(value, kind):
            raise OptionError(f"{name} must be a nestc.{kind.__name__}, got {type(value).__name__}")
    config.validate()
    train_config.validate()
    require(resume, (bool,), "--resume", "True or False")  # resume="no" is true, and would resume
    if limit is not None:
        require(limit, (int,), "--limit", "an integer >= 1")
        if limit < 1:
            raise OptionError(f"--limit {limit}: must be at least 1")
    if sparse_format not in SPARSE_FORMATS:
        raise OptionError(f"--sparse-format {sparse_format}: use one of {', '.join(SPARSE_FORMATS)}")
    # first: it refuses a device this machine lacks before any loading, and joins torchrun's process
    # group with the backend its device needs (nccl cannot reduce the CPU tensors of --device cpu)
    trainer = Trainer(train_config)
    if log is None or not trainer.dist.is_main:  # under torchrun every rank runs this; one speaks
        log = _silent
    checkpoint = f"{output}.ckpt"  # written after every step, deleted once the output is: an output too
    sources = model_files(model)  # the model and its external data: no output may replace them
    check_outputs({"-o": output, "--report": report, "--plot": plot, "-o's checkpoint": checkpoint},
                  *sources, *data_files(data))
    started = time.perf_counter()
    normalised = load_model(model)
    stored = stored_precision(normalised)  # what onnxruntime runs: the input file's own float type
    before_ort = runtime.session(stored, str(model))  # a model onnxruntime refuses fails before training
    mean, std = check_normalisation(mean, std)
    identity = run_identity(model, data, limit, output_name, train_config.seed, mean, std)
    if resume and os.path.exists(checkpoint):
        _check_resumable(checkpoint, identity)
    elif resume:  # the run finished (its checkpoint goes with the output) or never wrote one: said, not guessed
        log(f"--resume: no checkpoint {checkpoint}; starting from the beginning")
    with about(model):
        net = Network(normalised)
        view = trainable_view(net, output_name, str(model))
        before_stats = model_stats(net)  # the network is trained in place from here on
    dataset = data_for_model(view, data, data_dir, download, mean, std, limit=limit, label=str(model))
    log(f"input normalisation: mean {describe_values(dataset.mean)}, std {describe_values(dataset.std)} "
        "(the output expects the same)")
    if dataset.input_fit:
        log(f"input images fitted to the model: {dataset.input_fit} (the output expects the same)")
    scores = output_classes(view, dataset.x_test[:2])
    if dataset.num_classes is not None and scores > dataset.num_classes:  # e.g. --output-name on a feature output
        log(f"note: output '{view.output}' has {scores} scores, data '{dataset.name}' has {dataset.num_classes} "
            f"classes: the other {scores - dataset.num_classes} are trained toward no label")
    split = _split_data(trainer, ClassifierView(copy.deepcopy(net), output_name, str(model)), dataset, scores,
                        config, train_config.seed, str(model), log)
    net, with_norms = _batch_norm_candidate(net, dataset.x_train, config.batch_norm if split.trained else "off", log)
    tc = train_config if split.teacher is None else replace(
        train_config, distill_weight=1.0 if split.y_train is None else 0.5)
    run = NestRun(net, output_name, split, config, tc, checkpoint=checkpoint, resume=resume, log=log, started=started,
                  normalised=with_norms)
    run.state["identity"] = identity  # saved in every checkpoint; a resumed run keeps the original's
    with about(model):  # the passes run the graph without knowing its file
        outcome = run.run()
    final = fold_batch_norms(outcome.network)  # the file has the input's graph: inserted normalisation folded
    record_input(final.template, dataset)  # the output keeps the inputs it was trained on (eval reads them)
    emitted = stored_precision(emit_model(final, sparse_format))
    onnx.checker.check_model(emitted)
    _check_equivalence(outcome.network, emitted, dataset.x_test[:256], str(output))
    after_ort = runtime.session(emitted, str(output))
    payload = _report(model, output, model_bytes(sources), before_stats, emitted, final, outcome, dataset,
                      before_ort, after_ort, time.perf_counter() - started, view.output, split.validation,
                      config.target_params)
    payload["batch_norms_inserted"] = run.state.get("batch_norms_inserted", 0)
    serialized = emitted.SerializeToString()
    payload["file_bytes"]["after"] = len(serialized)
    if trainer.dist.is_main:  # under torchrun every rank ends with the same model; one writes it
        files = {output: serialized}
        if report is not None:
            files[report] = json_bytes(payload)
        if plot is not None and outcome.history:
            files[plot] = history_png(payload["history"], f"nestc compress {Path(model).name}", outcome.output_step)
        _write_outputs(files, checkpoint)
    return CompressResult(str(output), outcome.met_budget, payload)


def _batch_norm_candidate(net: Network, x_train: np.ndarray, mode: str,
                          log: Callable[[str], None]) -> tuple[Network, Network | None]:
    """The network to train and, for ``auto``, the one with inserted normalisation for the learning-rate check
    to choose (``NestConfig.batch_norm``; ``off`` for a seed, which trains as its graph says: nothing was folded
    out of it)."""
    if mode == "off":
        return net, None
    candidate, inserted = insert_batch_norms(net, statistics_sample(x_train))
    if not inserted:
        return net, None
    if mode == "on":
        log(f"batch normalisation: {inserted} convolution(s) without it train with one, folded back into them in "
            "the output (--batch-norm on; auto lets the learning-rate check decide)")
        return candidate, None
    log(f"batch normalisation: {inserted} convolution(s) without it; the learning-rate check trains the model with "
        "and without one after each (exporters fold it into the convolutions)")
    return net, candidate


def _write_outputs(files: dict[str | os.PathLike, bytes], checkpoint: str) -> None:
    """Write the run's files and delete its checkpoint as one step that Ctrl-C or SIGTERM cannot split.

    An interrupt between the writes left the model and report written, the plot missing and the
    checkpoint kept, and the command said that no output was written.
    """
    with uninterruptible():
        try:
            atomic_write_files(files)  # all or none: a full disk for the report left the model written alone
        except OutputError as exc:
            if os.path.exists(checkpoint):
                exc.args = (f"{exc}; no output was written, the run is kept in {checkpoint}: run the same command "
                            "with --resume once that is fixed",)
            raise
        if os.path.exists(checkpoint):
            os.unlink(checkpoint)


def _silent(_line: str) -> None:
    """The log of every rank but the first, and of a call that asks for none."""


def _check_resumable(checkpoint: str, identity: str) -> None:
    """Refuse a checkpoint left by a run of another model, data set or seed."""
    saved = read_state(checkpoint).get("identity")
    if saved is not None and saved != identity:
        raise OptionError(f"--resume: {checkpoint} was written by a run with another model, data, --limit, "
                          "--output-name, --seed, --mean or --std; rerun that command with --resume, or delete the "
                          "checkpoint to start over")


def _split_data(trainer: Trainer, original: ClassifierView, dataset, classes: int, config: NestConfig, seed: int,
                label: str, log: Callable[[str], None]) -> SplitData:
    """Training and validation tensors on the device, with teacher logits when distillation helps.

    A trained original model has usually seen the whole training split, so part of that split would
    flatter it; decisions are therefore judged on the test split unless ``validation="train"`` holds
    out part of the training split (the schedule then confirms results on the test split). The original
    teaches only when it is a trained classifier (``model_data.is_trained``); unlabeled data is
    always distilled and judged by agreement with the original model's predictions. ``classes``: the number
    of scores the original gives (``compress`` measured it already).
    """
    original.to(trainer.device)
    unlabeled = dataset.y_train is None or dataset.y_test is None
    y_test = dataset.y_test
    if unlabeled:
        _check_teacher(trainer, original, dataset, classes, label)
        y_test = trainer.predict_logits(original, dataset.x_test).argmax(1).numpy()
    accuracy = float(trainer.evaluate(original, dataset.x_test, y_test)[1])
    trained = unlabeled or is_trained(accuracy, classes)
    if not trained:
        log(f"{label}: {accuracy:.1%} on the test split ({classes} classes): untrained (a seed, or trained "
            "on other data), so it is trained before pruning and the budget refers to the trained network")
    source = config.validation
    if source == "test":
        x_train, y_train, x_val, y_val = dataset.x_train, dataset.y_train, dataset.x_test, y_test
    else:
        x_train, y_train, x_val, y_val = split_validation(dataset.x_train, dataset.y_train, config.val_fraction, seed)
        if y_val is None:
            y_val = trainer.predict_logits(original, x_val).argmax(1).numpy()
    if unlabeled:
        y_train = None
    teacher = trainer.predict_logits(original, x_train) if unlabeled or (config.distill and trained) else None

    confirm = (None, None) if source == "test" or y_test is None else (dataset.x_test, y_test)
    arrays = [x_train, y_train, x_val, y_val, teacher, *confirm]
    # moved once for the whole run (every fit and evaluation reuses them), or pinned when the GPU lacks room
    staged, _ = stage([None if a is None else torch.as_tensor(np.ascontiguousarray(a)) for a in arrays],
                      trainer.device)
    x_train_t, y_train_t, x_val_t, y_val_t, teacher_t, x_test_t, y_test_t = staged
    # stage keeps None where it was given one; the training and held-out tensors never are
    return SplitData(x_train_t, y_train_t, x_val_t, y_val_t, teacher_t,  # type: ignore[arg-type]
                     source, trained, x_test_t, y_test_t)


def _check_teacher(trainer: Trainer, original: ClassifierView, dataset, classes: int, label: str) -> None:
    """Refuse data with an unlabeled split when the original model has nothing to teach.

    Such data are learnt from, and judged by, the original's own predictions; an untrained model's are
    random, and a run on them reported 100 % accuracy for a network that had learnt nothing. Untrained:
    near chance on the split that has labels (a random sample of it: a class-sorted file's first images
    are one class) or, with none, a seed as ``nestc seed`` wrote it.
    """
    labelled = [(split, x, y) for split, x, y in (("test", dataset.x_test, dataset.y_test),
                                                  ("training", dataset.x_train, dataset.y_train)) if y is not None]
    missing = " and ".join(split for split, y in (("training", dataset.y_train), ("test", dataset.y_test)) if y is None)
    if labelled:
        split, x, y = labelled[0]
        keep = np.random.default_rng(0).permutation(len(x))[:PROBE_SAMPLES]
        accuracy = float(trainer.evaluate(original, x[keep], y[keep])[1])
        if is_trained(accuracy, classes):
            return
        why = f"untrained ({accuracy:.1%} on the labelled {split} split, {classes} classes)"
    elif untrained_seed(original.net.template):
        why = "a seed as `nestc seed` wrote it, untrained"
    else:
        return
    raise DataError(f"data '{dataset.name}' has no labels in its {missing} split{'s' if ' and ' in missing else ''}, "
                    f"and {label} is {why}: unlabeled data is learnt from the model's own predictions, which are "
                    "random; give labels for both splits, or a trained model")


def _check_equivalence(net: Network, emitted: onnx.ModelProto, x: np.ndarray, label: str) -> None:
    """The emitted file must compute what the trained network computes (onnxruntime vs the IR).

    A file that holds any float16 or bfloat16 tensor (stored in float16, or casting to it inside: the
    network then computes those ops in half precision too, rounded otherwise than onnxruntime rounds)
    is held to half precision (``HALF_TOLERANCE``), anything else to 1e-4.
    """
    sess = runtime.session(emitted, label, exact=True)
    expected = net.run_numpy(x)
    actual = runtime.run_batched(sess, x, 256)
    tolerance = HALF_TOLERANCE if computes_in_half(emitted) else 1e-4
    for want, got in zip(expected, actual, strict=True):
        if want.dtype.kind == "f" and not np.allclose(got.astype(np.float32), want, rtol=tolerance, atol=tolerance):
            raise PassError(f"{label}: onnxruntime output differs from the trained network by "
                            f"{float(np.abs(got - want).max()):.3g}; not writing it")


def _accuracy_ort(sess, output_index: int, x: np.ndarray, y: np.ndarray | None) -> float | None:
    if y is None:
        return None
    outs = runtime.run_batched(sess, x)
    return float((class_scores(outs[output_index]).argmax(1) == y).mean())


def _latency(sessions: dict, x_test: np.ndarray) -> dict[str, dict[str, float]]:
    """Median onnxruntime milliseconds per run of each session at batch 1 and 256, keyed ``batch_<size>``
    by the batch actually timed: a test split of fewer than 256 samples is timed whole, and named so.
    A session whose file fixes its batch is timed only at that size."""
    fixed = {label: sess.get_inputs()[0].shape[0] for label, sess in sessions.items()}  # an int: a fixed batch
    latency: dict[str, dict[str, float]] = {label: {} for label in sessions}
    for batch in sorted({1, min(256, len(x_test))}):
        fitting = {label: sess for label, sess in sessions.items() if not isinstance(fixed[label], int)
                   or fixed[label] == batch}
        for label, ms in runtime.interleaved_latency_ms(fitting, x_test[:batch], repeats=20).items():
            latency[label][f"batch_{batch}"] = round(ms, 4)
    return latency


def _report(model, output, before_bytes: int, before_stats: ModelStats, after_model: onnx.ModelProto,
            final: Network, outcome, dataset, before_sess, after_sess, seconds: float, output_name: str,
            validation: str, target_params: int | None) -> dict:
    after_stats = model_stats(final)
    index = [o.name for o in after_model.graph.output].index(output_name)
    x_test, y_test = dataset.x_test, dataset.y_test
    latency = _latency({"before": before_sess, "after": after_sess}, x_test)
    before_acc = _accuracy_ort(before_sess, index, x_test, y_test)
    after_acc = _accuracy_ort(after_sess, index, x_test, y_test)
    return {
        "model": str(model), "output": str(output), "data": dataset.name, "met_budget": outcome.met_budget,
        "input_normalisation": {"mean": list(dataset.mean), "std": list(dataset.std)},
        "input_fit": dataset.input_fit or None,
        "grew": outcome.grew, "validation": validation, "reference_val_accuracy": outcome.reference_accuracy,
        "reference_test_accuracy": outcome.reference_test_accuracy,
        "budget_val_accuracy": outcome.budget_accuracy, "learning_rate": outcome.learning_rate,
        "target_params": None if target_params is None else {
            "requested": target_params, "reached": after_stats.nonzero_params <= target_params},
        "accuracy": {"before": before_acc, "after": after_acc, "measured_by": "onnxruntime", "split": "test"},
        "params": {"before": before_stats.params, "after": after_stats.params},
        "nonzero_params": {"before": before_stats.nonzero_params, "after": after_stats.nonzero_params},
        "macs": {"before": before_stats.macs, "after": after_stats.macs},
        "nonzero_macs": {"before": before_stats.nonzero_macs, "after": after_stats.nonzero_macs},
        "compression": {  # non-zeros before over after, as the printed table: a sparse seed's dense size is no baseline
            "nonzero_params": round(before_stats.nonzero_params / max(after_stats.nonzero_params, 1), 3),
            "nonzero_macs": round(before_stats.nonzero_macs / max(after_stats.nonzero_macs, 1), 3)},
        "ort_latency_ms": latency,
        "file_bytes": {"before": before_bytes, "after": None},
        "layers_after": [asdict(layer) for layer in after_stats.layers],
        "seconds": round(seconds, 2),
        "history": [asdict(h) for h in outcome.history],
        "output_step": outcome.output_step,
        "stopped_by": outcome.stopped_by,
        "max_epochs": outcome.max_epochs,
    }
