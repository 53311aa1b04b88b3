"""Bad options: refused with one line naming the option, exit 2, before any work starts.

"Before any work" is checked by running ``compress`` without ``--quiet``: a run that got as far as
training would log its steps on stdout, so stdout must stay empty; and no file of the case's folder may
appear or change (a checkpoint, an input that an option named as an output).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import errors_helpers as h
import onnx
import pytest
from errors_helpers import Run, assert_clean_failure, run_cli, run_cli_many

from nestc import api
from nestc.compression import compress
from nestc.errors import OptionError


@dataclass(frozen=True)
class Case:
    """``args(folder, model, out)`` gives the command line; ``mentions`` what the message must say."""

    id: str
    args: Callable[[Path, Path, Path], list[str] | None]
    mentions: tuple[str, ...]


def _compress(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda folder, model, out: ["compress", str(model), "-o", str(out), "--limit", "200", "--max-epochs", "1",
                                       "--device", "cpu", *extra]


def _unwritable(folder: Path, model: Path, out: Path) -> list[str] | None:
    target = h.unwritable_folder(folder)
    return None if target is None else ["compact", str(model), "-o", str(target / "out.onnx")]


def _garbage_checkpoint(folder: Path, model: Path, out: Path) -> list[str]:
    Path(f"{out}.ckpt").write_bytes(b"this is not a checkpoint")
    return _compress("--resume")(folder, model, out)


def _symlink_to_input(folder: Path, model: Path, out: Path) -> list[str]:
    link = folder / "link.onnx"
    link.symlink_to(model)
    return ["compact", str(model), "-o", str(link)]


def _onto_data(command: str, option: str) -> Callable[[Path, Path, Path], list[str]]:
    """``command`` reading a ``.npz`` data set, with ``option`` naming that same file as an output."""
    def args(folder: Path, model: Path, out: Path) -> list[str]:
        data = str(h.image_npz(folder / "d.npz"))
        outputs = {"-o": str(out), option: data}
        return [command, str(model), *[a for pair in outputs.items() for a in pair], "--data", data, "--device", "cpu"]
    return args


def _onto_external_data(folder: Path, model: Path, out: Path) -> list[str]:
    """The model's weights live in ``weights.bin``; ``-o`` names that file."""
    external = folder / "external.onnx"
    onnx.save_model(onnx.load(model), external, save_as_external_data=True, location="weights.bin")
    return ["compact", str(external), "-o", str(folder / "weights.bin")]


def _train(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda folder, model, out: ["train", str(model), "-o", str(out), "--device", "cpu", *extra]


def _checkpoint_is_input(folder: Path, model: Path, out: Path) -> list[str]:
    """The model is called ``out.onnx.ckpt``: the name ``-o out.onnx`` gives its checkpoint."""
    renamed = model.rename(folder / "out.onnx.ckpt")
    return _compress()(folder, renamed, out)


def _validate_other_inputs(folder: Path, model: Path, out: Path) -> list[str]:
    api.seed("resnet18", folder / "other.onnx", width_ratio=0.1)  # 3x32x32 images, the MLP takes 1x28x28
    return ["validate", str(model), str(folder / "other.onnx")]


def _validate(make: Callable[[], onnx.ModelProto]) -> Callable[[Path, Path, Path], list[str]]:
    """validate on two copies of the model ``make`` builds."""
    return lambda folder, model, out: ["validate", str(h.save(make(), folder / "a.onnx")),
                                       str(h.save(make(), folder / "b.onnx"))]


CASES = [
    Case("output equals input", lambda folder, model, out: ["compress", str(model), "-o", str(model)],
         ("-o", "output path equals the input")),
    Case("output equals input, spelled differently",
         lambda folder, model, out: ["compact", str(model), "-o", str(model.parent / "." / ".." / model.parent.name
                                                                      / model.name)],
         ("output path equals the input",)),
    Case("output is a link to the input", _symlink_to_input, ("link.onnx", "output path equals the input")),
    Case("--report equals input", _compress("--report", "{model}"), ("--report", "output path equals the input")),
    Case("--report equals -o", _compress("--report", "{out}"), ("--report", "same path as -o")),
    Case("-o equals the --data file", _onto_data("compress", "-o"), ("-o", "d.npz", "output path equals the input")),
    Case("--report equals the --data file", _onto_data("compress", "--report"),
         ("--report", "d.npz", "output path equals the input")),
    Case("-o equals the --data file (train)", _onto_data("train", "-o"),
         ("-o", "d.npz", "output path equals the input")),
    Case("-o equals the model's external data", _onto_external_data,
         ("-o", "weights.bin", "output path equals the input")),
    Case("-o's checkpoint is the input", _checkpoint_is_input, ("-o's checkpoint", "out.onnx.ckpt",
                                                                 "output path equals the input")),
    Case("--report equals -o's checkpoint", _compress("--report", "{out}.ckpt"),
         ("-o's checkpoint", "same path as --report")),
    Case("--checkpoint equals input (train)", _train("--checkpoint", "{model}"),
         ("--checkpoint", "output path equals the input")),
    Case("--checkpoint equals -o (train)", _train("--checkpoint", "{out}"), ("--checkpoint", "same path as -o")),
    Case("--checkpoint is a directory (train)", lambda folder, model, out: _train("--checkpoint", str(folder))(
        folder, model, out), ("--checkpoint", "is a directory")),
    Case("--checkpoint folder missing (train)", _train("--checkpoint", "{out}.d/run.ckpt"),
         ("--checkpoint", "does not exist")),
    Case("--resume without --checkpoint (train)", _train("--resume"), ("--resume needs --checkpoint",)),
    Case("--plot equals --report", _compress("--report", "{out}.json", "--plot", "{out}.json"),
         ("--plot", "same path as --report")),
    Case("unwritable output folder", _unwritable, ("out.onnx", "is not writable")),
    Case("output folder missing", lambda folder, model, out: ["seed", "lenet-5", "-o", str(folder / "no" / "m.onnx")],
         ("-o", "m.onnx", "does not exist")),
    Case("output folder missing (demo)", lambda folder, model, out: ["demo", "-o", str(folder / "no" / "m.onnx")],
         ("-o", "m.onnx", "does not exist")),
    Case("output names a folder that does not exist",
         lambda folder, model, out: ["seed", "lenet-5", "-o", f"{folder / 'new'}/"], ("-o", "new/", "trailing slash")),
    Case("-o - (standard output)", lambda folder, model, out: ["seed", "lenet-5", "-o", "-"],
         ("-o -", "standard output")),
    Case("--report - (standard output)", _compress("--report", "-"), ("--report -", "standard output")),
    Case("output is a directory", lambda folder, model, out: ["compact", str(model), "-o", str(folder)],
         ("is a directory",)),
    Case("--max-acc-drop -1", _compress("--max-acc-drop", "-1"), ("--max-acc-drop -1",)),
    Case("--max-acc-drop nan", _compress("--max-acc-drop", "nan"), ("--max-acc-drop nan",)),
    Case("--epochs 0", _compress("--epochs", "0"), ("--epochs", "0")),
    Case("--epochs 0 (train)", lambda folder, model, out: ["train", str(model), "-o", str(out), "--epochs", "0"],
         ("--epochs", "0")),
    Case("--epochs abc", _compress("--epochs", "abc"), ("--epochs", "abc")),
    Case("--batch-size 0", _compress("--batch-size", "0"), ("--batch-size", "0")),
    Case("--batch-size 0 (eval)", lambda folder, model, out: ["eval", str(model), "--batch-size", "0"],
         ("--batch-size 0",)),
    Case("--lr -1", _compress("--lr", "-1"), ("--lr", "-1")),
    Case("--amp fp16", _compress("--amp", "fp16"), ("--amp", "fp16")),
    Case("--mean without --std", _compress("--mean", "0.5"), ("--mean and --std go together",)),
    Case("--mean abc", _compress("--mean", "abc", "--std", "1"), ("--mean", "abc")),
    Case("--std 0", _compress("--mean", "0", "--std", "0"), ("--std 0", "positive")),
    Case("--mean per channel", _compress("--mean", "0.1,0.2", "--std", "1"), ("--mean", "1 channel")),
    Case("--mean without --data (validate)",
         lambda folder, model, out: ["validate", str(model), str(model), "--mean", "0.5", "--std", "0.5"],
         ("--mean/--std", "give --data")),
    Case("--mean without --std (validate)", lambda folder, model, out: ["validate", str(model), str(model), "--mean",
                                                                         "0.5"], ("--mean and --std go together",)),
    Case("--std 1/0 (eval)", lambda folder, model, out: ["eval", str(model), "--mean", "0", "--std", "1/0"],
         ("--std", "1/0")),
    Case("--max-epochs 0", _compress("--max-epochs", "0"), ("--max-epochs 0",)),
    Case("--prune-fraction 1.5", _compress("--prune-fraction", "1.5"), ("--prune-fraction 1.5",)),
    Case("--unit-prune-fraction 1", _compress("--unit-prune-fraction", "1"), ("--unit-prune-fraction 1",)),
    Case("--max-prune-fraction below the step", _compress("--max-prune-fraction", "0.1"),
         ("--max-prune-fraction 0.1", "prune fraction")),
    Case("--max-prune-fraction 1", _compress("--max-prune-fraction", "1"), ("--max-prune-fraction 1",)),
    Case("--grow-prune-cycles -1", _compress("--grow-prune-cycles", "-1"), ("--grow-prune-cycles -1",)),
    Case("--cycle-growth 0", _compress("--cycle-growth", "0"), ("--cycle-growth 0",)),
    Case("--batch-norm maybe", _compress("--batch-norm", "maybe"), ("--batch-norm", "maybe")),
    Case("--target-params 0", _compress("--target-params", "0"), ("--target-params 0",)),
    Case("--time-budget -5", _compress("--time-budget", "-5"), ("--time-budget -5",)),
    Case("--limit 0", _compress("--limit", "0"), ("--limit 0",)),
    Case("--device tpu", _compress("--device", "tpu"), ("device", "tpu")),
    Case("--round-to 0", lambda folder, model, out: ["compact", str(model), "-o", str(out), "--round-to", "0"],
         ("--round-to 0",)),
    Case("--density 2", lambda folder, model, out: ["seed", "lenet-300-100", "-o", str(out), "--density", "2"],
         ("--density 2",)),
    Case("--width-ratio 0", lambda folder, model, out: ["seed", "lenet-5", "-o", str(out), "--width-ratio", "0"],
         ("--width-ratio 0",)),
    Case("--input-shape 3,32", lambda folder, model, out: ["seed", "lenet-5", "-o", str(out), "--input-shape", "3,32"],
         ("--input-shape 3,32", "channels, height and width")),
    Case("--input-shape 1,28,28 for vgg16",
         lambda folder, model, out: ["seed", "vgg16", "-o", str(out), "--input-shape", "1,28,28"],
         ("--input-shape", "28x28", "too small for vgg16")),
    Case("--samples 0", lambda folder, model, out: ["validate", str(model), str(model), "--samples", "0"],
         ("--samples 0",)),
    Case("--samples beyond any memory (validate)",
         lambda folder, model, out: ["validate", str(model), str(model), "--samples", str(10**12)],
         ("out of memory", f"({10**12}, 1, 28, 28)", "fewer --samples")),
    Case("--atol nan", lambda folder, model, out: ["validate", str(model), str(model), "--atol", "nan"],
         ("--atol nan",)),
    Case("validate models with other inputs", _validate_other_inputs, ("other.onnx", "cannot be compared")),
    Case("validate two-input models", _validate(h.two_inputs), ("a.onnx", "takes 2 inputs (a, b)",
                                                                "validate feeds one data tensor")),
    Case("validate integer-input models", _validate(h.integer_input), ("a.onnx", "input 'ids' is tensor(int64)",
                                                                       "validate feeds float data or uint8 pixels")),
    Case("--seed -1 (seed)", lambda folder, model, out: ["seed", "lenet-5", "-o", str(out), "--seed", "-1"],
         ("--seed -1",)),
    Case("--birth-strength -5", _compress("--birth-strength", "-5"), ("--birth-strength -5",)),
    Case("unknown option", _compress("--frobnicate"), ("--frobnicate",)),
    Case("--resume with a garbage checkpoint", _garbage_checkpoint, ("--resume", "out.onnx.ckpt", "unreadable")),
]


@dataclass
class Outcome:
    run: Run | None
    out: Path
    folder: Path
    digests: dict[Path, str]
    """Every file of the case's folder before the run: inputs, and files an option named."""


def _digests(folder: Path) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once through the CLI, all in one interpreter (see ``run_cli_many``)."""
    base = tmp_path_factory.mktemp("bad_options")
    argvs, results = [], {}
    for index, case in enumerate(CASES):
        folder = base / f"case{index}"
        folder.mkdir()
        model, out = folder / "seed.onnx", folder / "out.onnx"
        api.seed("lenet-300-100", model, width_ratio=0.1, density=0.3)
        args = case.args(folder, model, out)
        if args is not None:
            argvs.append([a.replace("{model}", str(model)).replace("{out}", str(out)) for a in args])
        results[case.id] = Outcome(None if args is None else Run(-1, "", ""), out, folder, _digests(folder))
    runs = iter(run_cli_many(argvs))
    for outcome in results.values():
        if outcome.run is not None:
            outcome.run = next(runs)
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_option_is_one_line_exit_2_before_any_work(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    if outcome.run is None:
        pytest.skip("no unwritable folder on this machine (root without a read-only file system)")
    assert_clean_failure(outcome.run, *case.mentions, outputs=(outcome.out,))
    assert outcome.run.stdout == "", "work started before the option was checked"
    assert _digests(outcome.folder) == outcome.digests, "a file (a checkpoint, say) was written or modified"


def test_console_entry_point_refuses_output_equal_to_input(tmp_path: Path) -> None:
    """The same refusal through ``python -m nestc`` in its own process."""
    model = tmp_path / "seed.onnx"
    api.seed("lenet-300-100", model, width_ratio=0.1, density=0.3)
    before = model.read_bytes()
    run = run_cli("compress", model, "-o", model, "--device", "cpu")
    assert_clean_failure(run, str(model), "output path equals the input")
    assert model.read_bytes() == before


def test_bare_command_prints_the_help_as_it_is() -> None:
    """``nestc`` alone asks for the commands: the help, not a 1,000-character ``nestc: error:`` line."""
    run = run_cli()
    assert run.code == 2, run.stderr
    assert "nestc: error:" not in run.stderr
    assert run.stderr.startswith("Usage: ")
    assert "\n  compress " in run.stderr and "\n  validate " in run.stderr, run.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    ({"max_epochs": "1"}, "--max-epochs '1': must be a number"),
    ({"target_params": "100"}, "--target-params '100': must be an integer or None"),
    ({"distill": 1}, "--distill 1: must be True or False"),
    ({"max_epochs": True}, "--max-epochs True: must be a number"),
])
def test_api_config_of_the_wrong_type_is_named(overrides: dict, message: str) -> None:
    """From Python, a string where a number belongs is refused by name before any work, not by a
    TypeError deep inside the run."""
    from nestc import NestConfig

    with pytest.raises(OptionError, match=re.escape(message)):
        NestConfig(**overrides)
    config = NestConfig()
    for name, value in overrides.items():
        setattr(config, name, value)
    with pytest.raises(OptionError, match=re.escape(message)):
        config.validate()


def test_api_compress_refuses_a_config_of_another_kind(tmp_path: Path) -> None:
    from nestc import NestConfig, compress

    api.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.1, density=0.3)
    with pytest.raises(OptionError, match=r"config must be a nestc\.NestConfig, got dict"):
        compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", {"max_epochs": 1})
    with pytest.raises(OptionError, match=r"train_config must be a nestc\.TrainConfig, got NestConfig"):
        compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", NestConfig(), NestConfig())
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(OptionError, match=r"config must be a nestc\.TrainConfig, got NestConfig"):
        api.train(tmp_path / "seed.onnx", tmp_path / "out.onnx", "embedded", NestConfig())


@pytest.mark.parametrize("fraction", [0.02, 0.6])
def test_api_step_bounds_follow_a_prune_fraction_outside_the_defaults(fraction: float) -> None:
    """As on the command line, a prune fraction below the default minimum step or above the default
    maximum works alone (it used to fail validation from Python)."""
    from nestc import NestConfig

    config = NestConfig(prune_fraction=fraction)
    config.validate()
    low, high = config.prune_step_bounds
    assert low <= fraction <= high


@pytest.mark.parametrize("fraction", [0.02, 0.6])
def test_api_step_bounds_follow_a_prune_fraction_set_after_construction(fraction: float) -> None:
    """A config copied with another step size, or changed in place, works as one made with it: the
    unset bounds used to be filled in at construction and then refused the new step size."""
    from dataclasses import replace

    from nestc import NestConfig

    copied = replace(NestConfig(), prune_fraction=fraction)
    copied.validate()
    changed = NestConfig()
    changed.prune_fraction = fraction
    changed.validate()
    made = NestConfig(prune_fraction=fraction)
    assert copied.prune_step_bounds == changed.prune_step_bounds == made.prune_step_bounds
    assert copied.max_prune_fraction is None and copied.min_prune_fraction is None


def test_config_errors_name_the_option_a_user_can_type() -> None:
    """Errors name ``--option`` for what ``nestc compress`` sets and ``NestConfig.<field>`` otherwise; the
    table behind that must list exactly the compress command's options."""
    from dataclasses import fields

    import click

    from nestc import NestConfig, cli
    from nestc.schedule.config import CLI_OPTIONS

    command = cli.cli.commands["compress"]
    flags = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    for item in fields(NestConfig):
        typed = "--" + item.name.replace("_", "-")
        if item.name in CLI_OPTIONS:
            assert CLI_OPTIONS[item.name] in flags, item.name
        else:
            assert typed not in flags, f"{item.name} is a compress option: add it to CLI_OPTIONS"
    with pytest.raises(OptionError, match=r"NestConfig\.probe_samples 0: must be an integer >= 1"):
        NestConfig(probe_samples=0).validate()
    with pytest.raises(OptionError, match=r"--epochs 0: must be a number > 0"):
        NestConfig(grow_epochs=0).validate()
    with pytest.raises(OptionError, match=r"--batch-norm True: must be a string"):
        NestConfig(batch_norm=True).validate()  # type: ignore[arg-type]  # the boolean of earlier releases
    with pytest.raises(OptionError, match=r"--batch-norm yes: use one of auto, on, off"):
        NestConfig(batch_norm="yes").validate()


@pytest.mark.parametrize(("call", "message"), [
    (lambda tmp: api.inspect(None), "model None: must be a file path"),
    (lambda tmp: api.compact(tmp / "m.onnx", tmp / "o.onnx", round_to="4"), "--round-to '4': must be an integer"),
    (lambda tmp: api.evaluate(tmp / "m.onnx", "embedded", batch_size=2.5), "--batch-size 2.5: must be an integer"),
    (lambda tmp: api.evaluate(tmp / "m.onnx", data=123), "--data 123: must be a data set name or path"),
    (lambda tmp: api.validate(tmp / "m.onnx", tmp / "m.onnx", atol="x"), "--atol 'x': must be a number"),
    (lambda tmp: api.validate(tmp / "m.onnx", tmp / "m.onnx", seed="x"), "seed 'x': must be an integer"),
    (lambda tmp: api.validate(tmp / "m.onnx", tmp / "m.onnx", seed=-1), "seed -1: must be at least 0"),
    (lambda tmp: api.seed("lenet-5", tmp / "s.onnx", width_ratio="0.5"), "--width-ratio '0.5': must be a number"),
    (lambda tmp: api.seed("lenet-5", tmp / "s.onnx", classes=2.5), "--classes 2.5: must be an integer"),
    (lambda tmp: api.seed("lenet-5", 42), "-o 42: must be a file path"),
    (lambda tmp: compress(tmp / "m.onnx", tmp / "o.onnx", limit="100"), "--limit '100': must be an integer"),
    (lambda tmp: compress(tmp / "m.onnx", tmp / "o.onnx", resume="no"), "--resume 'no': must be True or False"),
    (lambda tmp: api.train(tmp / "m.onnx", tmp / "o.onnx", resume=1), "--resume 1: must be True or False"),
    (lambda tmp: api.evaluate(tmp / "m.onnx", download="no"), "--download 'no': must be True or False"),
    (lambda tmp: api.validate(tmp / "m.onnx", tmp / "m.onnx", "embedded", download=1),
     "--download 1: must be True or False"),
], ids=["inspect-none", "round-to-str", "batch-float", "data-int", "atol-str", "seed-str", "seed-negative",
        "width-str", "classes-float",
        "output-int", "limit-str", "resume-str", "resume-int", "download-str", "download-int"])
def test_api_arguments_of_the_wrong_type_are_named(tmp_path: Path, call: Callable, message: str) -> None:
    """The Python API refuses what the command line would have refused at parsing, by the option's name."""
    api.seed("lenet-300-100", tmp_path / "m.onnx", width_ratio=0.1)
    with pytest.raises(OptionError, match=re.escape(message)):
        call(tmp_path)
