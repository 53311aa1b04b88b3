"""Awkward paths: special files, links, names the file system refuses, outputs a full disk splits, old checkpoints.

Each is a user's mistake or a state of the machine, so each ends in one ``nestc: error:`` line with exit 2,
no traceback, and no output written or replaced.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
import torch
from errors_helpers import assert_clean_failure, run_cli_many

from nestc import api, fileio
from nestc.errors import DataError, ModelError, OptionError, OutputError
from nestc.fileio import atomic_write_bytes, atomic_write_files, check_output_path
from nestc.frontends.files import read_model_file
from nestc.schedule.state import read_state
from nestc.training import checkpoint as ckpt

LONG = "a" * 300  # one name longer than any file system takes (255 bytes)


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("paths") / "seed.onnx"
    api.seed("lenet-300-100", model, width_ratio=0.1, density=0.3)
    return model


def _loop(folder: Path, name: str) -> Path:
    link = folder / name
    link.symlink_to(name)  # points at itself
    return link


def test_outputs_that_are_special_files_are_refused(tmp_path: Path) -> None:
    """``-o /dev/null`` run as root replaced the device with a regular file; a FIFO became one too."""
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    with pytest.raises(OptionError, match=r"-o .*out\.onnx: is a FIFO, not a regular file"):
        check_output_path(fifo)
    with pytest.raises(OptionError, match=r"--report /dev/null: is a character device"):
        check_output_path("/dev/null", option="--report")
    assert fifo.is_fifo()


def test_cli_refuses_special_files_and_names_it_cannot_look_up(seed_model: Path, tmp_path: Path) -> None:
    """A FIFO as model, --checkpoint or .npz waited forever or was called empty or missing; a name too long or a
    symbolic link loop raised OSError or RuntimeError with a traceback, for inputs, outputs and data."""
    for name in ("pipe.onnx", "pipe.ckpt", "pipe.npz"):
        os.mkfifo(tmp_path / name)
    loop = _loop(tmp_path, "loop.onnx")
    out = tmp_path / "out.onnx"
    cases = [
        (["compact", tmp_path / "pipe.onnx", "-o", out], ("pipe.onnx", "is a FIFO, not a regular file")),
        (["train", seed_model, "-o", out, "--checkpoint", tmp_path / "pipe.ckpt", "--resume", "--device", "cpu"],
         ("--checkpoint", "pipe.ckpt", "is a FIFO")),
        (["eval", seed_model, "--data", tmp_path / "pipe.npz"], ("pipe.npz", "is a FIFO")),
        (["compact", seed_model, "-o", tmp_path / f"{LONG}.onnx"], ("-o", "...", "File name too long")),
        (["compact", tmp_path / f"{LONG}.onnx", "-o", out], ("...", "cannot read (File name too long)")),
        (["compress", seed_model, "-o", out, "--report", tmp_path / f"{LONG}.json"],
         ("--report", "File name too long")),
        (["compress", seed_model, "-o", out, "--data", tmp_path / f"{LONG}.npz"], ("--data", "File name too long")),
        (["eval", seed_model, "--data", "mnist", "--data-dir", tmp_path / LONG], ("--data-dir", "File name too long")),
        (["compact", loop, "-o", out], ("loop.onnx", "cannot read")),
        (["compact", seed_model, "-o", loop], ("-o", "loop.onnx", "symbolic link loop")),
        (["train", seed_model, "-o", out, "--checkpoint", loop], ("--checkpoint", "loop.onnx", "symbolic link loop")),
    ]
    for (_, mentions), run in zip(cases, run_cli_many([argv for argv, _ in cases])):
        assert_clean_failure(run, *mentions, outputs=(out,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.onnx", "pipe.ckpt", "pipe.npz", "pipe.onnx"]


def test_api_names_the_file_for_special_and_unreachable_inputs(seed_model: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(ModelError, match="is a FIFO"):
        read_model_file(tmp_path / "pipe.onnx")
    with pytest.raises(ModelError, match="cannot read"):
        read_model_file(_loop(tmp_path, "loop.onnx"))
    with pytest.raises(DataError, match=r"--data .*cannot read"):
        api.evaluate(seed_model, data=tmp_path / f"{LONG}.npz")


def test_a_name_near_the_limit_is_still_written(tmp_path: Path) -> None:
    """The temporary file beside the output was named after it and so went past 255 bytes."""
    out = tmp_path / f"{'b' * 250}.onnx"
    check_output_path(out)
    atomic_write_bytes(out, b"model")
    assert out.read_bytes() == b"model"


def test_an_output_that_is_a_link_is_written_through_it(tmp_path: Path) -> None:
    """The check looked at the folder of the link's target, the write replaced the link itself: a link into
    another folder was checked there and written here (and a dangling one refused though it could be written)."""
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "model.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "current.onnx"
    link.symlink_to(target)
    check_output_path(link)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["model.onnx"]


def test_a_failed_write_of_one_output_writes_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk for the report (the folder check passes: an empty probe file fits) left the model written
    alone, with the command failing and the checkpoint kept."""
    model, report = tmp_path / "m.onnx", tmp_path / "m.json"
    model.write_bytes(b"old model")
    real_fsync, calls = os.fsync, []

    def full_on_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_on_second)
    with pytest.raises(OutputError, match=r"m\.json: cannot write \(No space left on device\)"):
        atomic_write_files({model: b"new model", report: b"{}"})
    assert model.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_compress_says_nothing_was_written_when_an_output_cannot_be(seed_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from nestc import compression

    out, checkpoint = tmp_path / "out.onnx", tmp_path / "out.onnx.ckpt"
    checkpoint.write_bytes(b"kept")

    def full(files: dict) -> None:
        raise OutputError(f"{tmp_path / 'r.json'}: cannot write (No space left on device)")

    monkeypatch.setattr(fileio, "atomic_write_files", full)
    monkeypatch.setattr(compression, "atomic_write_files", full)
    with pytest.raises(OutputError, match=r"no output was written, the run is kept in .*out\.onnx\.ckpt.*--resume"):
        compression._write_outputs({out: b"m", tmp_path / "r.json": b"{}"}, str(checkpoint))
    assert checkpoint.read_bytes() == b"kept" and not out.exists()


def test_a_training_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    """A format-1 file without the entries a resume reads failed with ``KeyError: 'plan'``."""
    path = tmp_path / "run.ckpt"
    torch.save({"format": ckpt.FORMAT, "model": {}}, path)
    with pytest.raises(OptionError, match=r"run\.ckpt' lacks epoch, fit_index.*another nestc version"):
        ckpt.load(path)


def test_a_compress_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    """A checkpoint whose counters lack ``step`` passed the identity check and failed with ``KeyError: 'step'``."""
    path = tmp_path / "out.onnx.ckpt"
    state = torch.frombuffer(bytearray(json.dumps({"identity": "x"}).encode()), dtype=torch.uint8).clone()
    buffer = io.BytesIO()
    torch.save({"current": {"onnx": torch.zeros(1, dtype=torch.uint8), "masks": {}}, "state": state}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(OptionError, match=r"unreadable \(it lacks epochs_used, history, phase, step"):
        read_state(path)
