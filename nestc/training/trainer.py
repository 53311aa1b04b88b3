"""``Trainer``: the training loop every NeST step runs, on one device or data-parallel.

Each :meth:`Trainer.fit` builds its optimizer, schedule and DDP wrapper from scratch because the
compressor replaces parameter tensors between fits; nothing that points at parameters survives a
call. The loop avoids host-device syncs: running loss and accuracy accumulate on the device and are
read once per epoch (plus once per progress refresh when a bar is shown). The same epoch-end read
detects a non-finite loss, which rolls the epoch back to an in-memory snapshot and retries it with
half the learning rate.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nestc.errors import OptionError, TrainingDiverged, first_line
from nestc.training import checkpoint as ckpt
from nestc.training import distributed, inference
from nestc.training.config import (
    TrainConfig,
    check_epochs,
    check_gpu_per_process,
    resolve_amp,
    resolve_device,
    resolve_device_type,
)
from nestc.training.data import ArrayLike, DeviceData, FitPlan, epoch_seed, place, shard_order
from nestc.training.objective import Objective
from nestc.training.progress import UPDATE_EVERY, Progress, wanted
from nestc.training.schedule import LRSchedule, make_optimizer
from nestc.training.state import all_finite, capture, clone_tree, restore, training_mode

MAX_RETRIES = 3
"""Rollbacks of one epoch (each halving the learning rate) before a fit gives up."""


@dataclass
class FitResult:
    """What one :meth:`Trainer.fit` achieved.

    ``epochs_run`` is how far the fit got in all (a resumed fit counts the epochs before the
    interruption); ``train_loss`` and ``train_accuracy`` (``None`` without labels) are means over
    the last epoch run; ``samples_per_second`` counts every rank's samples in this call.
    """

    epochs_run: float
    train_loss: float
    train_accuracy: float | None
    samples_per_second: float
    rolled_back: int


@dataclass
class _EpochOutcome:
    loss: float
    accuracy: float | None
    samples: int
    finite: bool


@dataclass
class _Run:
    """Everything one fit's epochs share; built fresh per fit, never kept on the Trainer."""

    net: nn.Module  # what runs forward: the model, or its DDP wrapper
    model: nn.Module
    data: DeviceData
    plan: FitPlan
    objective: Objective
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    fit_index: int
    on_batch: Callable[[nn.Module], None] | None
    progress: Progress
    started: float
    identity: str | None = None  # saved with every checkpoint; a resume must present the same
    samples: int = 0


class Trainer:
    """Trains classification networks given as ``nn.Module`` mapping ``x`` to logits ``[N, classes]``.

    A Trainer holds configuration and the resolved device only, so one instance serves all the
    fits of a compression run. Its ``k``-th fit always draws the same batches for a given ``seed``
    (a fresh Trainer replays the sequence), while successive fits draw different ones, so that many
    short retraining fits still cover the whole data set.

    When launched by ``torchrun`` (or when the caller initialised a process group) it trains
    data-parallel: see :mod:`nestc.training.distributed`.
    """

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        check_gpu_per_process(config.device, *distributed.launched_as())
        backend = "nccl" if resolve_device_type(config.device) == "cuda" else "gloo"
        self.dist = distributed.init_from_env(backend)
        self.device: torch.device = resolve_device(config.device, self.dist.local_rank)
        self.amp = resolve_amp(config.amp, self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._fits = 0

    # ------------------------------------------------------------------------------------ fitting
    def fit(self, model: nn.Module, x: ArrayLike, y: ArrayLike | None, teacher_logits: ArrayLike | None = None,
            epochs: float | None = None, checkpoint: str | os.PathLike[str] | None = None, resume: bool = False,
            on_batch: Callable[[nn.Module], None] | None = None, identity: str | None = None,
            on_epoch: Callable[[int, int, float, float | None], None] | None = None) -> FitResult:
        """Train ``model`` in place (it is moved to :attr:`device` and stays there).

        Args:
            model: the network; its parameters may differ from the previous call's.
            x: inputs, first axis = samples.
            y: integer class labels, or ``None`` for unlabeled data (then distill_weight must be 1).
            teacher_logits: the original model's logits for ``x``, needed when distill_weight > 0.
            epochs: overrides ``config.epochs`` for this fit; fractions are fine.
            checkpoint: file rewritten atomically at the end of every epoch (rank 0 only).
            resume: continue from ``checkpoint`` if it exists, ending bit-identical to a fit that was
                never interrupted (on the CPU; GPU kernels may sum in another order from run to run);
                without the file the fit starts from scratch.
            on_batch: called with the (unwrapped) model after every optimizer step, e.g. to
                re-apply connection masks. It runs in the hot loop: keep it cheap.
            on_epoch: called on rank 0 after every finished epoch with (epochs done, epochs of the fit, mean
                training loss, training accuracy or ``None``): a log line for those who see no progress bar.
            identity: what the run is of (e.g. :func:`nestc.fileio.run_identity` of the model file and
                data), saved in the checkpoint; resuming a checkpoint saved with another is refused, since
                another model's weights load without complaint whenever the shapes agree.

        Raises:
            OptionError: inconsistent options, or a checkpoint written for another fit.
            DataError: data that do not line up or contain NaN/Inf.
            TrainingDiverged: the loss stayed non-finite after every rollback; the model then holds
                the weights from the start of the failing epoch.
        """
        cfg = self.config
        if resume and checkpoint is None:
            raise OptionError("resume=True needs the checkpoint file to resume from")
        objective = Objective.for_data(cfg, y is not None, teacher_logits is not None)
        plan_epochs = cfg.epochs if epochs is None else check_epochs(epochs)
        data = place(x, y, teacher_logits if objective.distill_weight > 0 else None, self.device)
        plan = FitPlan.make(len(data), cfg.batch_size, self.dist.world_size, plan_epochs)
        model.to(self.device)
        optimizer = make_optimizer(model, cfg)
        schedule = LRSchedule(cfg.lr, plan.total_steps, round(cfg.warmup_epochs * plan.steps_per_epoch),
                              cosine=cfg.schedule == "cosine")
        fit_index, self._fits = self._fits, self._fits + 1
        with self._private_rng(), training_mode(model, True):
            self._seed(epoch_seed(cfg.seed, fit_index, self.dist.rank))
            state = ckpt.load(checkpoint) if resume else None  # type: ignore[arg-type]
            last: dict[str, Any] = {"loss": float("nan"), "accuracy": None}  # as _resume and _save type it
            start_epoch, rolled_back = 0, 0
            if state is not None:
                fit_index, start_epoch, rolled_back, last = self._resume(
                    state, checkpoint, plan, model, optimizer, schedule, identity)  # type: ignore[arg-type]
                self._fits = fit_index + 1
            run = _Run(self._wrap(model, data), model, data, plan, objective, optimizer, schedule, fit_index, on_batch,
                       Progress(plan.total_steps, wanted(cfg.quiet, self.dist.is_main)), time.perf_counter(), identity)
            if state is not None:
                run.progress.advance(schedule.step, last["loss"], last["accuracy"], 0.0)
            try:
                for epoch in range(start_epoch, plan.epochs):
                    outcome, retries = self._epoch_with_rollback(run, epoch)
                    rolled_back += retries
                    last = {"loss": outcome.loss, "accuracy": outcome.accuracy}
                    if checkpoint is not None:
                        self._save(checkpoint, run, epoch, rolled_back, last)
                    if on_epoch is not None and self.dist.is_main:
                        on_epoch(epoch + 1, plan.epochs, outcome.loss, outcome.accuracy)
            finally:
                run.progress.close()
        speed = run.samples / (time.perf_counter() - run.started) if run.samples else 0.0
        return FitResult(epochs_run=schedule.step / plan.steps_per_epoch, train_loss=last["loss"],
                         train_accuracy=last["accuracy"], samples_per_second=speed, rolled_back=rolled_back)

    def _epoch_with_rollback(self, run: _Run, epoch: int) -> tuple[_EpochOutcome, int]:
        """Run ``epoch``; on a non-finite loss restore its starting state and retry at half the rate."""
        snapshot = clone_tree(capture(run.model, run.optimizer, run.schedule))
        for retries in range(MAX_RETRIES + 1):
            outcome = self._epoch(run, epoch)
            run.samples += outcome.samples
            if outcome.finite:
                return outcome, retries
            restore(snapshot, run.model, run.optimizer, run.schedule)
            run.schedule.scale *= 0.5 ** (retries + 1)
        raise TrainingDiverged(
            f"training diverged: the loss or the outputs became NaN or Inf in epoch {epoch + 1} and stayed so after "
            f"{MAX_RETRIES} rollbacks that halved the learning rate each time; lower the learning rate (lr, --lr; now "
            f"{self.config.lr:g}) or clip gradients (grad_clip, --grad-clip)")

    def _epoch(self, run: _Run, epoch: int) -> _EpochOutcome:
        """One pass over this rank's shard; the only device sync is at the end (and for the bar)."""
        cfg, data, plan = self.config, run.data, run.plan
        order = shard_order(len(data), epoch_seed(cfg.seed, run.fit_index, epoch), self.dist.rank,
                            self.dist.world_size).to(data.index_device)
        params = [p for group in run.optimizer.param_groups for p in group["params"]]
        tally = inference.Tally(self.device)
        seen, b = 0, plan.local_batch
        steps = plan.steps_in(epoch)
        for k in range(steps):
            xb, yb, tb = data.take(order[k * b:(k + 1) * b])
            assert xb is not None, "place() always holds inputs; only labels and teacher are optional"
            run.schedule.apply(run.optimizer)
            with inference.autocast(self.device, self.amp):
                logits = run.net(xb)
            loss = run.objective(logits, yb, tb)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            run.optimizer.step()
            if run.on_batch is not None:
                run.on_batch(run.model)
            n = len(xb)
            seen += n
            tally.add(loss, n, logits, yb)
            if run.progress.enabled and ((k + 1) % UPDATE_EVERY == 0 or k + 1 == steps):
                loss_total, correct_total = tally.totals().tolist()
                run.progress.advance(run.schedule.step, loss_total / seen,
                                     correct_total / seen if yb is not None else None,
                                     (run.samples + seen) * self.dist.world_size / (time.perf_counter() - run.started))
        assert xb is not None, "every epoch has a step (FitPlan.steps_in >= 1): xb is its last batch"
        bad = ~(tally.loss.isfinite() & all_finite(run.model).to(self.device) & _computes_finite(run.model, xb))
        loss_total, correct_total, bad_ranks = distributed.all_reduce_sum(tally.totals(bad)).tolist()
        distributed.broadcast_buffers(run.model)  # the last step updated each rank's statistics from its own batch
        samples = seen * self.dist.world_size
        accuracy = correct_total / samples if data.y is not None else None
        return _EpochOutcome(loss_total / samples, accuracy, samples, bad_ranks == 0)

    # --------------------------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module, x: ArrayLike, y: ArrayLike | None,
                 batch_size: int | None = None) -> tuple[float, float]:
        """Mean cross-entropy and top-1 accuracy of ``model`` on ``(x, y)``.

        Runs in eval mode without gradients and restores every submodule's previous mode. Every rank
        evaluates the whole set, so all ranks get the same numbers without communicating. The default
        batch size suits the device (:func:`inference.eval_batch_size`). Computed in float32 even where
        training autocasts to bf16: these numbers keep or undo steps against a hard accuracy budget that
        the written float32 file is held to, and bf16 rounding can flip a prediction near a tie.
        """
        if y is None:
            raise OptionError("evaluate needs labels; for unlabeled data pass the original model's predicted "
                              "classes, e.g. predict_logits(original, x).argmax(1)")
        return inference.evaluate(model, place(x, y, None, self.device), self._eval_batch(batch_size), amp=False)

    def predict_logits(self, model: nn.Module, x: ArrayLike, batch_size: int | None = None) -> torch.Tensor:
        """``model``'s float32 logits for ``x``, on the CPU (e.g. teacher logits for distillation), computed in
        float32 as :meth:`evaluate` (their argmax labels unlabeled data)."""
        return inference.predict_logits(model, place(x, None, None, self.device), self._eval_batch(batch_size),
                                        amp=False)

    # ------------------------------------------------------------------------------------ helpers
    def _eval_batch(self, batch_size: int | None) -> int:
        return inference.eval_batch_size(self.device) if batch_size is None else batch_size

    def _private_rng(self) -> contextlib.AbstractContextManager[Any]:
        """Fork the global RNGs a fit touches, so that training leaves the caller's streams alone."""
        return torch.random.fork_rng(devices=[self.device.index] if self.device.type == "cuda" else [])

    def _seed(self, seed: int) -> None:
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)  # the current device, set to self.device in __init__

    def _wrap(self, model: nn.Module, data: DeviceData) -> nn.Module:
        """DDP around ``model`` when data-parallel; built per fit, as parameters change between fits.

        DDP waits for a gradient of every parameter before the next step; one that does not reach the
        logits (a second head of the graph, next to the output trained on) gets none, and the second step
        then fails. Such parameters are looked for once per fit, on two samples (a batch normalisation that
        uses batch statistics needs more than one; every rank finds the same).
        """
        if self.dist.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        unused = _has_unused_parameters(model, data.slice(0, 2)[0])  # type: ignore[arg-type]
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)

    def _save(self, path: str | os.PathLike[str], run: _Run, epoch: int, rolled_back: int,
              last: dict[str, Any]) -> None:
        rng = ckpt.stack_rng(distributed.all_gather_object(ckpt.rng_state(self.device)))  # collective: all ranks
        if not self.dist.is_main:
            return
        ckpt.save_atomic({**capture(run.model, run.optimizer, run.schedule), "epoch": epoch + 1,
                          "fit_index": run.fit_index, "rolled_back": rolled_back, "plan": _plan_key(run.plan),
                          "rng": rng, "last": last, "identity": run.identity}, path)

    def _resume(self, state: dict[str, Any], path: str | os.PathLike[str], plan: FitPlan, model: nn.Module,
                optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                identity: str | None) -> tuple[int, int, int, dict[str, Any]]:
        """Load the checkpoint at ``path`` into the live objects; returns (fit index, next epoch, rollbacks,
        last stats). A refusal names the file and what differs (torch's first line only says that loading
        failed; the mismatched tensors and shapes come after it)."""
        if identity is not None and state.get("identity") not in (None, identity):  # None: an older checkpoint
            raise OptionError(f"checkpoint {os.fspath(path)}: written by a run of another model, data, seed or "
                              "normalisation; delete it to start over")
        if state["plan"] != _plan_key(plan):
            raise OptionError(f"checkpoint {os.fspath(path)}: written by a different fit ({state['plan']}); this "
                              f"one is {_plan_key(plan)}. Delete it or pass resume=False")
        try:
            restore(state, model, optimizer, schedule)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise OptionError(f"checkpoint {os.fspath(path)}: does not fit this model ({first_line(exc)})") from exc
        ckpt.set_rng_state(state["rng"], self.dist.rank, self.device)
        return int(state["fit_index"]), int(state["epoch"]), int(state["rolled_back"]), state["last"]


def _computes_finite(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor: whether ``model``, as the epoch left it, gives finite outputs on the batch ``x``.

    Finite weights and losses are not enough: the last step can leave weights near 1e30 (one step at a
    learning rate of 1e30 did), every later forward pass overflows to NaN, and the fit looked fine.
    Evaluated in inference mode, so batch-norm statistics are not updated by the check.
    """
    with torch.no_grad(), training_mode(model, False):
        return model(x).isfinite().all()


def _has_unused_parameters(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether a trainable parameter of ``model`` gets no gradient from its output for the batch ``x``
    (evaluated in inference mode, which updates no statistics and draws no dropout)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with training_mode(model, False):
        out = model(x)
    return any(g is None for g in torch.autograd.grad(out.float().sum(), params, allow_unused=True))


def _plan_key(plan: FitPlan) -> dict[str, int]:
    return {"samples": plan.samples, "world_size": plan.world_size, "local_batch": plan.local_batch,
            "total_steps": plan.total_steps}
