"""Faults: Ctrl-C, ``kill -9`` and ``--resume``, diverging training, and interrupted writes.

The signal tests run real ``nestc compress`` processes on a tiny budget and interrupt them once the
run's checkpoint (``OUTPUT.ckpt``, rewritten atomically after every step) shows progress.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import errors_helpers as h
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from errors_helpers import assert_clean_failure, nestc_env, run_cli
from onnx import numpy_helper

from nestc import api
from nestc.compression import compress
from nestc.errors import OutputError, TrainingDiverged
from nestc.fileio import atomic_write_bytes
from nestc.schedule import runner
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig

BUDGET = ("--data", "embedded", "--limit", "300", "--max-epochs", "3", "--epochs", "0.25", "--device", "cpu", "--quiet",
          "--validation", "train")
"""A run of about ten seconds: growth steps of a quarter epoch, then pruning steps. Judged on a 30-image held-out
part, growth stops within the budget (on the 500 test images it still improves after three epochs)."""
INTERRUPTED_BUDGET = tuple("12" if arg == "3" else arg for arg in BUDGET)
"""BUDGET with 12 epochs, for runs a signal stops after their second checkpoint: in a 3-epoch run a test process
starved on a loaded 2-core machine saw that write only when the run was writing its output, when signals are
ignored, and the run ended with exit 0."""


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sparse LeNet-300-100 seed: compress grows it, then prunes (both phases are checkpointed)."""
    path = tmp_path_factory.mktemp("faults") / "seed.onnx"
    api.seed("lenet-300-100", path, width_ratio=0.1, density=0.3)
    return path


def _ctrl_c_as_in_a_terminal() -> None:
    """A child started from a shell's background job (``cmd &``, ``nohup``, some CI runners) inherits an
    ignored SIGINT, and Python then installs no KeyboardInterrupt handler: a Ctrl-C test would pass without
    any interrupt happening. The child gets the default disposition a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str | os.PathLike) -> subprocess.Popen:
    """``python -m nestc ARGS`` in the background, with Ctrl-C handled as in a terminal."""
    return subprocess.Popen([sys.executable, "-m", "nestc", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=nestc_env(), preexec_fn=_ctrl_c_as_in_a_terminal)


def _python(script: str, *args: str | os.PathLike, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c SCRIPT ARGS`` to its end, with Ctrl-C handled as in a terminal."""
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=nestc_env(), timeout=timeout, preexec_fn=_ctrl_c_as_in_a_terminal)


def _interrupt_after(proc: subprocess.Popen, checkpoint: Path, writes: int, sig: int, timeout: float = 240) -> str:
    """Send ``sig`` once ``checkpoint`` has been written ``writes`` times (each write replaces the file).

    Returns what the process wrote to stderr.
    """
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            stat = checkpoint.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and (not seen or seen[-1] != (stat.st_ino, stat.st_mtime_ns)):
            seen.append((stat.st_ino, stat.st_mtime_ns))
            if len(seen) >= writes:
                proc.send_signal(sig)
                break
        time.sleep(0.005)
    _, stderr = proc.communicate(timeout=timeout)
    assert len(seen) >= writes, f"the run ended (exit {proc.returncode}) before its checkpoint was written {writes}x"
    return stderr


def _history(report: Path) -> list[dict]:
    """The steps of a run's report, without their timings."""
    steps = json.loads(report.read_text())["history"]
    return [{k: v for k, v in step.items() if k != "seconds"} for step in steps]


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _ort(path: Path, batch: int = 16) -> list[np.ndarray]:
    """The model's outputs on seeded random inputs of its declared input shape."""
    sess = ort.InferenceSession(str(path))
    meta = sess.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in meta.shape[1:]]
    return sess.run(None, {meta.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})


def test_kill_9_then_resume_equals_an_uninterrupted_run(seed_model: Path, tmp_path: Path) -> None:
    reference, out = tmp_path / "reference.onnx", tmp_path / "out.onnx"
    checkpoint = Path(f"{out}.ckpt")
    uninterrupted = run_cli("compress", seed_model, "-o", reference, *BUDGET, "--report", tmp_path / "reference.json")
    assert uninterrupted.code in (0, 3), uninterrupted.stderr
    history = _history(tmp_path / "reference.json")
    assert {"grow", "prune"} <= {step["phase"] for step in history}, "the budget no longer reaches both phases"

    victim = _start("compress", seed_model, "-o", out, *BUDGET)
    _interrupt_after(victim, checkpoint, writes=3, sig=signal.SIGKILL)
    assert victim.returncode == -signal.SIGKILL
    assert not out.exists() and checkpoint.exists()

    resumed = run_cli("compress", seed_model, "-o", out, *BUDGET, "--resume", "--report", tmp_path / "out.json")
    assert resumed.code == uninterrupted.code, resumed.stderr
    assert not checkpoint.exists()
    assert _history(tmp_path / "out.json") == history
    want, got = _weights(reference), _weights(out)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), f"{name} differs after kill -9 and --resume"
    for a, b in zip(_ort(reference), _ort(out), strict=True):
        assert np.array_equal(a, b)


def test_ctrl_c_writes_nothing_says_how_to_resume_and_resumes(seed_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    checkpoint = Path(f"{out}.ckpt")
    victim = _start("compress", seed_model, "-o", out, *INTERRUPTED_BUDGET)
    stderr = _interrupt_after(victim, checkpoint, writes=2, sig=signal.SIGINT)
    interrupted = h.Run(victim.returncode, "", stderr)
    lines = [line for line in interrupted.stderr.splitlines() if line.strip()]
    assert interrupted.code == 130 and len(lines) == 1, interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert "no output was written" in lines[0] and "--resume" in lines[0] and str(checkpoint) in lines[0]
    assert not out.exists() and checkpoint.exists()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"

    other_seed = run_cli("compress", seed_model, "-o", out, *INTERRUPTED_BUDGET, "--resume", "--seed", "1")
    assert_clean_failure(other_seed, str(checkpoint), "--seed", "delete the checkpoint", outputs=(out,))

    resumed = run_cli("compress", seed_model, "-o", out, *INTERRUPTED_BUDGET, "--resume")
    assert resumed.code in (0, 3), resumed.stderr
    assert out.exists() and not checkpoint.exists()

    loud = [arg for arg in INTERRUPTED_BUDGET if arg != "--quiet"]
    again = run_cli("compress", seed_model, "-o", out, *loud, "--resume")  # the run had finished
    assert again.code == resumed.code, again.stderr
    assert f"--resume: no checkpoint {checkpoint}; starting from the beginning" in again.stdout


def test_sigterm_stops_like_ctrl_c_with_exit_143_and_resumes(seed_model: Path, tmp_path: Path) -> None:
    """A CI runner's timeout sends SIGTERM: it ended the run without a word (exit -15, and a temporary file
    being written stayed behind); now it unwinds as Ctrl-C does."""
    out = tmp_path / "out.onnx"
    checkpoint = Path(f"{out}.ckpt")
    victim = _start("compress", seed_model, "-o", out, *INTERRUPTED_BUDGET)
    stderr = _interrupt_after(victim, checkpoint, writes=2, sig=signal.SIGTERM)
    assert victim.returncode == 143, stderr
    assert stderr == (f"nestc: terminated (SIGTERM); no output was written. The last finished step is kept in "
                      f"{checkpoint}: run the same command with --resume to continue\n")
    assert sorted(tmp_path.iterdir()) == [checkpoint]
    resumed = run_cli("compress", seed_model, "-o", out, *INTERRUPTED_BUDGET, "--resume")
    assert resumed.code in (0, 3), resumed.stderr
    assert out.exists() and not checkpoint.exists()


@pytest.mark.parametrize(("sig", "code", "stopped"), [(signal.SIGINT, 130, "interrupted"),
                                                      (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_in_train_says_where_the_checkpoint_is_and_resumes(seed_model: Path, tmp_path: Path, sig: int,
                                                                 code: int, stopped: str) -> None:
    """As compress: one line (it was a blank line and a bare "nestc: interrupted"), the checkpoint kept.
    SIGTERM too, as a CI runner's timeout sends it (it ended the process without a word)."""
    out, checkpoint = tmp_path / "out.onnx", tmp_path / "train.ckpt"
    data = h.image_npz(tmp_path / "small.npz", n_train=256, n_test=32)  # epochs of milliseconds
    args = ("train", seed_model, "-o", out, "--data", data, "--mean", "0.5", "--std", "0.25", "--checkpoint",
            checkpoint, "--epochs", "20", "--batch-size", "64", "--device", "cpu", "--quiet")
    victim = _start(*args)
    stderr = _interrupt_after(victim, checkpoint, writes=2, sig=sig)
    assert victim.returncode == code, stderr
    assert stderr == (f"nestc: {stopped}; no output was written. The last finished epoch is kept in {checkpoint}: "
                      "run the same command with --resume to continue\n")
    assert not out.exists() and checkpoint.exists()
    config = TrainConfig(epochs=20, batch_size=64, device="cpu", quiet=True)  # the command's, resumed in process
    api.train(seed_model, out, str(data), config, checkpoint=checkpoint, resume=True, mean=(0.5,), std=(0.25,))
    assert out.exists()


INTERRUPT_EVALUATE = """
import os, signal, sys
from nestc import api, cli
real = api.evaluate
def evaluate(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
api.evaluate = evaluate
sys.argv = ["nestc", *sys.argv[1:]]
cli.main()
"""


SIGNAL_IN_EVALUATE = """
import os, signal, sys
from nestc import api, cli
real, sig = api.evaluate, getattr(signal, sys.argv[1])
def evaluate(*args, **kwargs):
    os.kill(os.getpid(), sig)
    return real(*args, **kwargs)
api.evaluate = evaluate
sys.argv = ["nestc", *sys.argv[2:]]
cli.main()
"""


@pytest.mark.parametrize(("sig", "code", "stopped"), [("SIGINT", 130, "interrupted"),
                                                      ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_a_signal_in_eval_is_one_line_with_its_exit_code(seed_model: Path, sig: str, code: int, stopped: str) -> None:
    """Commands without a handler of their own stop as compress and train do: SIGTERM (a CI timeout) in
    ``eval`` was reported as "interrupted", exit 130, after a blank line."""
    done = _python(SIGNAL_IN_EVALUATE, sig, "eval", seed_model, "--json")
    assert done.returncode == code, done.stderr
    assert done.stderr == f"nestc: {stopped}; no output was written\n"
    assert done.stdout == ""


SIGNAL_WHILE_TORCH_LOADS = """
import os, signal, sys
sig = getattr(signal, sys.argv[1])
class SignalOnImport:  # the signal arrives while torch is being imported, as a Ctrl-C right after Enter would
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), sig)
        return None
sys.meta_path.insert(0, SignalOnImport())
from nestc import cli
sys.argv = ["nestc", *sys.argv[2:]]
cli.main()
"""


@pytest.mark.parametrize(("sig", "code", "stopped"), [("SIGINT", 130, "interrupted"),
                                                      ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_a_signal_while_torch_loads_is_one_line_with_its_exit_code(seed_model: Path, sig: str, code: int,
                                                                    stopped: str) -> None:
    """The command line imported torch before any handler was in place: a Ctrl-C in the first seconds printed
    a traceback from inside torch's import, and SIGTERM killed the process without a word."""
    done = _python(SIGNAL_WHILE_TORCH_LOADS, sig, "inspect", seed_model)
    assert done.returncode == code, done.stderr
    assert done.stderr == f"nestc: {stopped}; no output was written\n"


def test_the_command_line_starts_without_torch_or_onnxruntime() -> None:
    """``nestc --help`` and a mistyped option answer before the heavy libraries load (2 s before, now 0.2 s)."""
    probe = "import sys, nestc.cli; print(sorted({'torch', 'onnxruntime', 'onnx', 'numpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=nestc_env(), timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr or done.stdout


def test_ctrl_c_in_train_after_the_output_is_written_says_so(seed_model: Path, tmp_path: Path) -> None:
    """A real Ctrl-C once the output is written, while its accuracy is measured: the line said that no output
    was written, beside the file just written."""
    out = tmp_path / "out.onnx"
    data = h.image_npz(tmp_path / "small.npz", n_train=256, n_test=32)
    done = _python(INTERRUPT_EVALUATE, "train", seed_model, "-o", out, "--data", data, "--mean", "0.5", "--std", "0.25",
                   "--epochs", "1", "--device", "cpu", "--quiet")
    assert done.returncode == 130, done.stderr
    assert done.stderr == f"nestc: interrupted after {out} was written, before its test accuracy was measured\n"
    assert out.exists()


@pytest.mark.parametrize("kept", [0, 4096], ids=["empty", "truncated"])
def test_train_resume_from_a_torn_checkpoint_is_one_line(seed_model: Path, tmp_path: Path, kept: int) -> None:
    """An empty checkpoint (a full disk, a copy cut short) ended the line after "checkpoint 'C':"."""
    out, checkpoint = tmp_path / "out.onnx", tmp_path / "train.ckpt"
    data = h.image_npz(tmp_path / "small.npz", n_train=64, n_test=16)
    args = ("train", seed_model, "-o", out, "--data", data, "--mean", "0.5", "--std", "0.25", "--checkpoint",
            checkpoint, "--epochs", "1", "--device", "cpu", "--quiet")
    assert run_cli(*args).code == 0
    checkpoint.write_bytes(checkpoint.read_bytes()[:kept])
    out.unlink()
    message = assert_clean_failure(run_cli(*args, "--resume"), str(checkpoint), "delete it", outputs=(out,))
    assert not message.rstrip().endswith(":"), message


def test_train_resume_refuses_the_checkpoint_of_another_model(seed_model: Path, tmp_path: Path) -> None:
    """A checkpoint left by training one model loaded into another of the same shapes without a word:
    the output was the other model's training. It is refused, as compress refuses one."""
    out, checkpoint, other = tmp_path / "out.onnx", tmp_path / "train.ckpt", tmp_path / "other.onnx"
    data = h.image_npz(tmp_path / "small.npz", n_train=64, n_test=16)
    api.seed("lenet-300-100", other, width_ratio=0.1, density=0.3, seed_value=1)  # same shapes, other weights

    def train(model: Path, *extra: str) -> h.Run:
        return run_cli("train", model, "-o", out, "--data", data, "--mean", "0.5", "--std", "0.25", "--checkpoint",
                       checkpoint, "--epochs", "1", "--device", "cpu", "--quiet", *extra)

    assert train(seed_model).code == 0
    out.unlink()
    assert_clean_failure(train(other, "--resume"), str(checkpoint), "another model", outputs=(out,))
    assert train(seed_model, "--resume").code == 0  # the same command resumes as before


def _finite(path: Path) -> bool:
    return all(np.isfinite(w).all() for w in _weights(path).values())


def test_grad_clip_bounds_every_training_step(seed_model: Path, tmp_path: Path) -> None:
    """``--grad-clip`` reaches the optimizer: with the gradient norm clipped to 1e-9 (and no weight decay) two
    steps at --lr 1 move no weight by more than about 1e-8, where the same run unclipped moves them by far more."""
    before = _weights(seed_model)
    moved = {}
    for clip in ([], ["--grad-clip", "1e-9"]):
        out = tmp_path / f"trained{len(clip)}.onnx"
        run = run_cli("train", seed_model, "-o", out, "--epochs", "0.1", "--lr", "1", "--weight-decay", "0",
                      "--quiet", *clip)
        assert run.code == 0, run.stderr
        after = _weights(out)
        moved[bool(clip)] = max(float(np.abs(after[name] - w).max()) for name, w in before.items())
    assert moved[True] < 1e-7 < 1e-3 < moved[False]


def test_diverging_training_undoes_its_steps_and_writes_finite_weights(seed_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the seed has trained, a learning rate of 1e30 makes every later fit diverge, even after the
    trainer's own rollbacks: each step is undone, the run still ends, and the output is the last good
    network, the trained seed."""
    real_fit, calls = runner.Trainer.fit, []

    def fit(self, model, *args, **kwargs):
        if calls:
            self.config = dataclasses.replace(self.config, lr=1e30)
        calls.append(1)
        return real_fit(self, model, *args, **kwargs)

    monkeypatch.setattr(runner.Trainer, "fit", fit)
    out = tmp_path / "out.onnx"
    result = compress(seed_model, out, "embedded", NestConfig(max_epochs=2, grow_epochs=0.5),
                      TrainConfig(device="cpu", quiet=True), limit=300, log=lambda _line: None)
    assert _finite(out)
    first, *later = result.report["history"]
    assert first["action"] == "train seed" and first["accepted"]
    diverged = [step for step in later if "diverged" in step["action"]]
    assert diverged and not any(step["accepted"] for step in diverged)
    assert result.report["nonzero_params"]["after"] <= first["nonzero_params"]


def test_a_model_that_never_trains_is_not_written(seed_model: Path, tmp_path: Path) -> None:
    """When every fit of an untrained model diverges, nothing was learnt: compress wrote the untrained seed,
    reported it within the budget of its own chance accuracy and exited 0. It is a divergence (exit 1)."""
    run = run_cli("compress", seed_model, "-o", tmp_path / "out.onnx", "--lr", "1e30", *BUDGET)
    assert run.code == 1, run.stderr
    assert run.stderr.startswith("nestc: error: training the untrained model diverged") and "--lr" in run.stderr
    assert len(run.stderr.splitlines()) == 1 and not (tmp_path / "out.onnx").exists()


def test_nan_in_one_step_rolls_back_to_the_network_before_it(seed_model: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if a diverged fit left NaN weights behind, the step's network is discarded, not emitted."""
    real_fit, calls = runner.Trainer.fit, []

    def fit(self, model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                for param in model.parameters():
                    param.fill_(float("nan"))
            raise TrainingDiverged("training diverged (injected)")
        return real_fit(self, model, *args, **kwargs)

    monkeypatch.setattr(runner.Trainer, "fit", fit)
    out = tmp_path / "out.onnx"
    result = compress(seed_model, out, "embedded", NestConfig(max_epochs=4, grow_epochs=1),
                      TrainConfig(device="cpu", quiet=True),
                      limit=300, log=lambda _line: None)
    assert len(calls) > 3 and _finite(out)
    steps = result.report["history"]
    failed = [s for s in steps if "diverged" in s["action"]]
    assert len(failed) == 1 and not failed[0]["accepted"]


INTERRUPT_EACH_WRITE = """
import os, signal, sys
import nestc.compression as c
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig
real = c.atomic_write_files
def write(files):
    for path, data in files.items():
        real({path: data})
        os.kill(os.getpid(), signal.SIGINT)
c.atomic_write_files = write
out = sys.argv[2]
c.compress(sys.argv[1], out, "embedded", NestConfig(max_epochs=1, grow_epochs=0.5), TrainConfig(device="cpu",
           quiet=True), report=out + ".json", plot=out + ".png", limit=300, log=lambda _line: None)
"""


def test_ctrl_c_while_the_outputs_are_written_does_not_split_them(seed_model: Path, tmp_path: Path) -> None:
    """A real Ctrl-C after each output file: the model, report and plot are written together and the checkpoint
    goes with them. Between the writes (the plot took a second to render) it left the model and report, no
    plot and the checkpoint, and said that no output was written."""
    out = tmp_path / "out.onnx"
    done = _python(INTERRUPT_EACH_WRITE, seed_model, out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.json", "out.onnx.png"]


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def interrupted(_fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_failed_write_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.onnx"

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"model\.onnx: cannot write \(No space left on device\)"):
        atomic_write_bytes(target, b"new")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """``mkstemp`` creates private files; outputs must be as readable as any file the user writes."""
    atomic_write_bytes(tmp_path / "model.onnx", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
