"""``NestConfig``: the knobs of the NeST flow, with defaults chosen by experiment (docs/schedule.md).

The paper leaves optimiser, epochs and most ratios open; these defaults work without tuning on the
LeNet seeds and on trained LeNets (Fashion-MNIST), and every one can be changed from the CLI or API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from nestc.errors import OptionError

GROW_MODES = ("auto", "on", "off")
BATCH_NORM_MODES = ("auto", "on", "off")
STEP_GROWTH = 1.5
"""Factor by which a pruning step grows after a step that cost no held-out accuracy."""
DEFAULT_MAX_PRUNE_FRACTION = 0.5
DEFAULT_MIN_PRUNE_FRACTION = 0.03
"""Step bounds of a ``NestConfig`` that leaves them unset (each widened to hold ``prune_fraction``)."""
LR_CHECK_TRIES = 4
"""Rates the learning-rate check tries: the configured one and three steps of sqrt(10) below it."""
VALIDATION_SOURCES = ("test", "train")
DEFAULT_EPOCHS = 40.0
DEFAULT_BUDGET_SAMPLES = 2_000_000
"""The default budget: ``DEFAULT_EPOCHS``, or as many epochs as ``DEFAULT_BUDGET_SAMPLES`` training samples take
(40 epochs of a 50,000-image set) when that is more. An epoch of 1,347 images is 11 optimizer steps: 40 of them
gave LeNet-300-100 on scikit-learn's digits 34,360 non-zeros where 300 gave 300 (docs/schedule.md)."""
DEFAULT_GROW_EPOCHS = 2.0
DEFAULT_GROW_SAMPLES = 100_000
"""The default growth-phase fit: ``DEFAULT_GROW_EPOCHS``, or ``DEFAULT_GROW_SAMPLES`` training samples' worth when
that is more. A LeNet-5 seed trained 22 optimizer steps per fit on 1,347 images swung between 42 % and 85 %."""
DEFAULT_LR_CHECK_EPOCHS = 0.25
DEFAULT_LR_CHECK_SAMPLES = 12_500
LR_CHECK_BUDGET_SHARE = 1 / 16
"""The default learning-rate check: ``DEFAULT_LR_CHECK_EPOCHS``, or ``DEFAULT_LR_CHECK_SAMPLES`` training samples'
worth when that is more, but then at most ``LR_CHECK_BUDGET_SHARE`` of the run's budget per rate tried."""


@dataclass
class NestConfig:
    """Grow-and-prune schedule.

    Attributes:
        max_acc_drop: accuracy budget, percentage points below the reference on the ``validation`` data
            (a trained original's accuracy; else that of the network nestc trained or grew from it).
        target_params: stop pruning once non-zero parameters are at or below this.
        max_epochs: total training epochs for the whole run (growth, retraining, recovery). ``None``: the
            default budget, :meth:`epoch_budget`: 40 epochs, more on a training split under 50,000 samples.
        time_budget: wall-clock seconds for the whole run (from the start of ``compress``), checked between
            steps: the step in progress finishes. A resumed run counts from its own start (epochs carry
            over in the checkpoint, wall time does not: each invocation fits its job's limit). ``None`` for
            no limit.
        grow: ``auto`` grows when the model is a NeST seed: sparse (weight density below 50 %). An
            untrained model (accuracy near chance, ``model_data.is_trained``) is trained before pruning
            whether it grows or not, since its chance-level accuracy is no budget to keep.
        grow_steps: most growth steps; growth also stops when held-out accuracy stops improving.
        grow_epochs: training epochs before each growth step (and of an untrained model's training steps and a
            grow-and-prune cycle's training). ``None``: 2, and for the growth phase :meth:`growth_epochs`, more on
            a small split.
        connection_growth: dormant connections activated per step, relative to the active count.
        neuron_growth: neurons added per fully connected hidden space per growth step.
        feature_map_growth: feature maps added per convolution space per growth step.
        neuron_beta / birth_strength: the paper's beta and alpha for neuron growth.
        map_candidates: random candidates tried per new feature map.
        prune_fraction: share of active connections pruned per step (halved after a failed step).
        max_prune_fraction: a step that cost no held-out accuracy at all (the network still scores
            the reference or better) makes the next one ``STEP_GROWTH`` times larger, up to this.
            Far from its limit a trained network loses nothing to pruning, and 20 % steps spent about
            15 of a 40-epoch budget getting there (docs/schedule.md). Equal to ``prune_fraction``:
            fixed steps. Unset: 0.5, or ``prune_fraction`` when that is larger.
        min_prune_fraction: pruning stops when the step size falls below this. Unset: 0.03, or
            ``prune_fraction`` when that is smaller.
        regrow_fraction: after pruning, this share of the pruned count is regrown by gradient, so
            pruning mistakes can be undone (grow-and-prune inside the pruning phase).
        unit_prune_fraction: share of live neurons and feature maps removed by magnitude per pruning
            step (scaled down with the step when a step is undone); narrower layers run faster in a
            dense runtime than sparse wide ones.
        grow_prune_cycles: when pruning stalls (the step size fell below ``min_prune_fraction``) and
            epochs remain (``grow_epochs`` plus one ``retrain_epochs``), the smallest network within
            budget regrows ``cycle_growth`` x its active connections by gradient, trains
            ``grow_epochs``, and pruning starts over from it; at most this many cycles in a row
            that find no smaller network (a cycle that does resets the count, so a long budget is
            spent on cycles while they pay). NeST's grow-and-prune applied to a trained model: the
            connections magnitude pruning left are re-chosen by the loss.
        cycle_growth: connections regrown per cycle, relative to the active count.
        partial_area_gamma: share of active convolution input positions masked per pruning step.
        round_to: a convolution's width above 4 units (``NARROW_WIDTH``) is a multiple of ``round_to`` (dead
            units beyond that stay as zeros), and feature-map growth rounds widths up to one; fully connected
            widths lose every dead unit (MLAS's GEMM runs as fast at any width). onnxruntime (x86) runs a
            convolution in its blocked NCHWc layout only when its input width is a multiple of its block (16 with
            AVX-512, 8 with AVX2) or below it, and inputs below it through a slower direct path: a compressed LeNet-5
            with 20 input channels to its second convolution took twice as long as with 16 (docs/schedule.md).
            1 removes every dead unit.
        lr_check_epochs: before pruning a trained model, it is fine-tuned this long (on a copy) at the
            training rate; a rate that costs more than ``lr_check_tolerance`` points is divided by
            sqrt(10) and tried again (at most ``LR_CHECK_TRIES`` rates, while the epoch budget lasts), and
            every later fit uses the rate that passed (when none did, the next lower one). An exporter
            that folds batch normalisation into the convolutions leaves a deep network without
            normalisation, which SGD at 0.05 wrecks within a tenth of an epoch (docs/schedule.md). 0
            switches the check off. ``None``: :meth:`lr_check_fit`, 0.25 or more on a small split.
        lr_check_tolerance: accuracy points a rate may cost in the check; it catches a destructive rate,
            not the half-point dip a good one causes before retraining recovers it.
        retrain_epochs: retraining after each pruning step.
        recovery_epochs: extra retraining for a step that misses the budget before it is undone.
        distill: distil from the original model when it is a trained classifier.
        batch_norm: ``on``: every Conv whose output reaches no BatchNormalization trains with one inserted after
            it (identity in inference mode: running statistics of the Conv's output, scale sqrt(var + eps), shift
            the mean), folded back into the Conv in the output (:mod:`nestc.passes.batch_norms`). Exporters fold
            batch normalisation into the convolutions, and without it a network trained with it may not train:
            a depthwise-separable net exported so fell from 86.0 % to 18.5 % in the learning-rate check's
            fine-tune at 0.05, and kept 88.7 % with normalisation (docs/schedule.md). ``auto`` (trained models):
            the learning-rate check fine-tunes the model both ways and keeps the normalisation only when it
            trains at least :data:`nestc.schedule.runner.BATCH_NORM_GAIN` points better, since for a network
            that was trained without it the normalisation was a draw (a LeNet-5: 6,390 non-zeros with it,
            5,004 without; a three-branch net 3,081 with, 3,615 without). ``off``: every graph trains as it is.
            Seeds always do.
        probe_samples: samples used to measure gradients for growth decisions.
        validation: which data every decision is judged on. ``test`` (the default): the data set's
            test split, the only data a model trained elsewhere on the whole training split has not
            seen, and the data the report's accuracy drop is measured on. ``train``: ``val_fraction``
            of the training split, held out from training; a network is then kept as the result only
            when the test split keeps the budget too (against the reference network's test accuracy).
        val_fraction: share of the training split held out when validating on it.
    """

    max_acc_drop: float = 0.5
    target_params: int | None = None
    max_epochs: float | None = None
    time_budget: float | None = None
    grow: str = "auto"
    grow_steps: int = 8
    grow_epochs: float | None = None
    connection_growth: float = 0.5
    neuron_growth: int = 8
    feature_map_growth: int = 2
    neuron_beta: float = 0.002
    birth_strength: float = 0.5
    map_candidates: int = 4
    prune_fraction: float = 0.2
    max_prune_fraction: float | None = None  # None: max(0.5, prune_fraction)
    min_prune_fraction: float | None = None  # None: min(0.03, prune_fraction)
    regrow_fraction: float = 0.0
    unit_prune_fraction: float = 0.0
    grow_prune_cycles: int = 3
    cycle_growth: float = 0.5
    partial_area_gamma: float = 0.0
    round_to: int = 16
    lr_check_epochs: float | None = None
    lr_check_tolerance: float = 2.0
    retrain_epochs: float = 1.0
    recovery_epochs: float = 1.0
    distill: bool = False
    batch_norm: str = "auto"
    probe_samples: int = 1024
    validation: str = "test"
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        """Refuse a value that cannot work where the config is made, not when a run starts; ``validate``
        checks again at the start, for fields changed since."""
        self.validate()

    @property
    def prune_step_bounds(self) -> tuple[float, float]:
        """``(min_prune_fraction, max_prune_fraction)`` with each one left unset following the step size.

        Resolved when read, not stored at construction: a stored default would outlive a later
        ``prune_fraction`` (``dataclasses.replace(config, prune_fraction=0.6)`` kept a maximum of 0.5, which
        validation then refused), so that any valid ``prune_fraction`` works alone however it was set.
        """
        low = min(DEFAULT_MIN_PRUNE_FRACTION, self.prune_fraction) if self.min_prune_fraction is None \
            else self.min_prune_fraction
        high = max(DEFAULT_MAX_PRUNE_FRACTION, self.prune_fraction) if self.max_prune_fraction is None \
            else self.max_prune_fraction
        return low, high

    def epoch_budget(self, train_samples: int) -> float:
        """Training epochs for the whole run on a training split of ``train_samples``: ``max_epochs`` when set.

        The schedule's other lengths are epochs too (one of retraining per pruning step); on a small split
        they are short, and the default budget holds more of them, so that a run gets about as many optimizer
        steps as on a 50,000-image set rather than a fortieth of what the defaults were chosen with.
        """
        if self.max_epochs is not None:
            return self.max_epochs
        return max(DEFAULT_EPOCHS, _epochs_of(DEFAULT_BUDGET_SAMPLES, train_samples))

    def growth_epochs(self, train_samples: int) -> float:
        """Epochs of one growth-phase fit on a training split of ``train_samples``: ``grow_epochs`` when set.

        Growth is judged by the accuracy after each fit; a fit of a few optimizer steps measures where SGD
        happened to stop, not what the grown network can learn, and the phase ends on that noise.
        """
        if self.grow_epochs is not None:
            return self.grow_epochs
        return max(DEFAULT_GROW_EPOCHS, _epochs_of(DEFAULT_GROW_SAMPLES, train_samples))

    def lr_check_fit(self, train_samples: int, budget: float) -> float:
        """Epochs of one learning-rate check on a training split of ``train_samples`` in a run of ``budget``
        epochs: ``lr_check_epochs`` when set.

        A quarter epoch of 1,347 images is three optimizer steps: a depthwise-separable net with batch norm
        folded kept its accuracy over them at a rate that then wrecked every pruning step (10 %); 12,500
        samples (9 epochs there) show it. Beyond a quarter epoch, a check takes at most a sixteenth of the
        budget, so that a short ``--max-epochs`` still leaves its epochs to pruning.
        """
        if self.lr_check_epochs is not None:
            return self.lr_check_epochs
        scaled = min(_epochs_of(DEFAULT_LR_CHECK_SAMPLES, train_samples), budget * LR_CHECK_BUDGET_SHARE)
        return max(DEFAULT_LR_CHECK_EPOCHS, scaled)

    @property
    def cycle_epochs(self) -> float:
        """Epochs of a grow-and-prune cycle's training: ``grow_epochs``, 2 when unset, on any split.

        A cycle retrains a network that was trained already; on scikit-learn's digits (1,347 images) cycles of
        22 optimizer steps let LeNet-300-100 end at 323 non-zeros, cycles as long as the growth phase's at 1,867.
        """
        return DEFAULT_GROW_EPOCHS if self.grow_epochs is None else self.grow_epochs

    def validate(self) -> None:
        """Raise :class:`OptionError` naming the first option that cannot work."""
        _check_types(self)
        _check(0 <= self.max_acc_drop <= 100, "max_acc_drop", self.max_acc_drop, "a number in [0, 100]")
        if self.target_params is not None:
            _check(self.target_params >= 1, "target_params", self.target_params, "an integer >= 1")
        if self.max_epochs is not None:
            _check(self.max_epochs > 0, "max_epochs", self.max_epochs, "a number > 0")
        if self.time_budget is not None:
            _check(self.time_budget > 0, "time_budget", self.time_budget, "seconds > 0")
        if self.grow not in GROW_MODES:
            raise OptionError(f"--grow {self.grow}: use one of {', '.join(GROW_MODES)}")
        if self.grow_epochs is not None:
            _check(self.grow_epochs > 0, "grow_epochs", self.grow_epochs, "a number > 0")
        _check(self.retrain_epochs > 0, "retrain_epochs", self.retrain_epochs, "a number > 0")
        if self.lr_check_epochs is not None:
            _check(self.lr_check_epochs >= 0, "lr_check_epochs", self.lr_check_epochs, "a number >= 0")
        _check(self.lr_check_tolerance >= 0, "lr_check_tolerance", self.lr_check_tolerance, "a number >= 0")
        _check(self.recovery_epochs >= 0, "recovery_epochs", self.recovery_epochs, "a number >= 0")
        _check(0 < self.prune_fraction < 1, "prune_fraction", self.prune_fraction, "a number in (0, 1)")
        low, high = self.prune_step_bounds
        _check(self.prune_fraction <= high < 1, "max_prune_fraction", high, "a number in [prune fraction, 1)")
        _check(0 < low <= self.prune_fraction, "min_prune_fraction", low, "a number in (0, prune fraction]")
        for name in ("regrow_fraction", "unit_prune_fraction", "partial_area_gamma", "neuron_beta"):
            _check(0 <= getattr(self, name) < 1, name, getattr(self, name), "a number in [0, 1)")
        if self.batch_norm not in BATCH_NORM_MODES:
            raise OptionError(f"--batch-norm {self.batch_norm}: use one of {', '.join(BATCH_NORM_MODES)}")
        if self.validation not in VALIDATION_SOURCES:
            raise OptionError(f"--validation {self.validation}: use one of {', '.join(VALIDATION_SOURCES)}")
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a number in (0, 1)")
        _check(0 < self.cycle_growth <= 10, "cycle_growth", self.cycle_growth, "a number in (0, 10]")
        _check(0 < self.connection_growth <= 10, "connection_growth", self.connection_growth, "a number in (0, 10]")
        for name in ("grow_steps", "neuron_growth", "feature_map_growth", "grow_prune_cycles"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "an integer >= 0")
        _check(self.round_to >= 1, "round_to", self.round_to, "an integer >= 1")
        _check(self.map_candidates >= 1, "map_candidates", self.map_candidates, "an integer >= 1")
        _check(self.probe_samples >= 1, "probe_samples", self.probe_samples, "an integer >= 1")
        _check(0 < self.birth_strength <= 10, "birth_strength", self.birth_strength, "a number in (0, 10]")


def _epochs_of(samples: int, train_samples: int) -> float:
    """How many epochs of a ``train_samples`` split the default lengths stated in samples take."""
    return samples / max(train_samples, 1)


CLI_OPTIONS = {
    **{name: "--" + name.replace("_", "-") for name in (
        "batch_norm", "birth_strength", "cycle_growth", "distill", "grow", "grow_prune_cycles", "lr_check_epochs",
        "max_acc_drop", "max_epochs", "max_prune_fraction", "partial_area_gamma", "prune_fraction", "regrow_fraction",
        "retrain_epochs", "round_to", "target_params", "time_budget", "unit_prune_fraction", "validation")},
    "grow_epochs": "--epochs",
}
"""The ``NestConfig`` fields ``nestc compress`` sets, by option; errors name the option a user typed."""


def option_name(field: str) -> str:
    """How an error names ``field``: its command-line option, else ``NestConfig.<field>``."""
    return CLI_OPTIONS.get(field, f"NestConfig.{field}")


_TYPES: dict[str, tuple[type, ...]] = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}
_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "True or False", "str": "a string", "None": "None"}


def _check_types(config: NestConfig) -> None:
    """Every field holds a value of its declared type, so that the range checks below compare numbers
    (``NestConfig(max_epochs="1")`` from Python would otherwise fail deep inside the run)."""
    for item in fields(config):
        value = getattr(config, item.name)
        kinds = [kind.strip() for kind in str(item.type).split("|")]
        if value is None and "None" in kinds:
            continue
        numeric_bool = isinstance(value, bool) and "bool" not in kinds
        if numeric_bool or not any(isinstance(value, _TYPES[kind]) for kind in kinds if kind in _TYPES):
            accepted = " or ".join(_TYPE_WORDS.get(kind, kind) for kind in kinds)
            raise OptionError(f"{option_name(item.name)} {value!r}: must be {accepted}")


def _check(ok: bool, field: str, value: object, accepted: str) -> None:
    if (isinstance(value, float) and not math.isfinite(value)) or not ok:
        raise OptionError(f"{option_name(field)} {value}: must be {accepted}")
