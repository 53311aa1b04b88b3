"""nestc as one step of a CI pipeline: it writes the files it is asked for and nothing else, and what it
prints for machines (``--json``, ``--report``) is JSON that any parser reads."""

from __future__ import annotations

from pathlib import Path

from errors_helpers import nestc_env, run_cli

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

