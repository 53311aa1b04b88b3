"""nestc as one step of a CI pipeline: it writes the files it is asked for and nothing else, and what it
prints for machines (``--json``, ``--report``) is JSON that any parser reads."""

from __future__ import annotations

import json
from pathlib import Path

import errors_helpers as h
import numpy as np
import onnx
from errors_helpers import nestc_env, run_cli
from onnx import numpy_helper

from nestc import api

CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
              "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER")
"""Variables by which libraries tell a CI runner from a workstation (onnxruntime's telemetry stays off on
one); removed, so that the tests see what a runner without them, or a developer's machine, sees."""


def _bare_env(home: Path) -> dict[str, str]:
    """The CLI's environment with a fresh, empty home and no CI markers or telemetry settings."""
    env = nestc_env()
    for name in (*CI_MARKERS, "ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env.pop(name, None)
    env["HOME"] = str(home)
    return env


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_nothing_is_written_to_home_or_the_working_folder(tmp_path: Path) -> None:
    """onnxruntime's telemetry wrote a device id and an upload queue under ~/.cache/Microsoft on import."""
    home, work, out = tmp_path / "home", tmp_path / "work", tmp_path / "out"
    for folder in (home, work, out):
        folder.mkdir()
    env = _bare_env(home)
    model = out / "seed.onnx"
    assert run_cli("seed", "lenet-300-100", "--width-ratio", "0.1", "--density", "0.3", "-o", model, cwd=work,
                   env=env).code == 0
    for args in (["inspect", model, "--json"], ["eval", model, "--json"],
                 ["compress", model, "-o", out / "small.onnx", "--report", out / "report.json", "--limit", "200",
                  "--max-epochs", "0.1", "--device", "cpu", "--quiet"]):
        run = run_cli(*args, cwd=work, env=env)
        assert run.code == 0, run.stderr
    assert _files(home) == [], "written to the home folder"
    assert _files(work) == [], "written to the working folder"
    assert _files(out) == ["report.json", "seed.onnx", "small.onnx"]


def test_eval_json_is_strict_json_when_the_loss_is_not_finite(tmp_path: Path) -> None:
    """Scores that overflow make the loss NaN; Python's json wrote it as the token ``NaN``, which is not
    JSON (jq and JavaScript refuse the whole document). It is ``null``: the loss is unknown."""
    model = onnx.load(h.save(h.small_model(), tmp_path / "m.onnx"))
    weight = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    big = np.full_like(numpy_helper.to_array(weight), np.finfo(np.float32).max)
    weight.CopyFrom(numpy_helper.from_array(big, weight.name))
    data = h.write_npz(tmp_path / "d.npz", x_train=np.ones((8, 4), np.float32), y_train=np.arange(8) % 3,
                       x_test=np.ones((8, 4), np.float32), y_test=np.arange(8) % 3)
    path = h.save(model, tmp_path / "overflow.onnx")
    assert not np.isfinite(api.evaluate(path, str(data), mean=(0.0,), std=(1.0,)).loss)  # the case this is about

    run = run_cli("eval", path, "--data", data, "--mean", "0", "--std", "1", "--json")
    assert run.code == 0, run.stderr

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON:\n{run.stdout}")

    report = json.loads(run.stdout, parse_constant=refuse)
    assert report["loss"] is None
    assert report["accuracy"] is not None



def test_train_writes_a_line_per_epoch_to_a_log_and_nothing_with_quiet(tmp_path: Path) -> None:
    """A CI log has no terminal for the progress bar: train said nothing until it ended. Now each finished epoch
    is a line on stdout, in the shape of compress's step lines (the first epoch's loss above the last's, as the
    model learns); ``--quiet`` keeps only the result line."""
    seed = tmp_path / "seed.onnx"
    api.seed("lenet-300-100", seed, width_ratio=0.2, density=0.5)
    loud = run_cli("train", seed, "-o", tmp_path / "a.onnx", "--epochs", "3")
    assert loud.code == 0, loud.stderr
    epochs = [line for line in loud.stdout.splitlines() if line.startswith("[epoch ")]
    assert [line.split("]")[0] for line in epochs] == ["[epoch 1/3", "[epoch 2/3", "[epoch 3/3"]
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in epochs]
    assert losses[0] > losses[-1]
    assert all("train accuracy" in line for line in epochs) and "\r" not in loud.stdout + loud.stderr
    quiet = run_cli("train", seed, "-o", tmp_path / "b.onnx", "--epochs", "3", "--quiet")
    assert quiet.code == 0 and quiet.stdout.replace("b.onnx", "a.onnx").splitlines() == [
        line for line in loud.stdout.splitlines() if not line.startswith("[epoch ")]


def test_train_on_data_without_test_labels_says_what_it_wrote(tmp_path: Path) -> None:
    """Training labels but none for the test split: train wrote its output and printed nothing about it."""
    seed = tmp_path / "seed.onnx"
    api.seed("lenet-300-100", seed, width_ratio=0.2, density=0.5)
    data = h.image_npz(tmp_path / "d.npz", n_train=40, n_test=10)
    with np.load(data) as npz:
        h.write_npz(data, x_train=npz["x_train"], y_train=npz["y_train"], x_test=npz["x_test"])
    run = run_cli("train", seed, "--data", data, "-o", tmp_path / "out.onnx", "--epochs", "1", "--quiet")
    assert run.code == 0 and (tmp_path / "out.onnx").is_file(), run.stderr
    assert run.stdout.splitlines() == [f"wrote {tmp_path / 'out.onnx'}; test accuracy not measured: the test split of "
                                       f"'{data}' has no labels"]
