"""Bad model files: each one fails with one line naming the file and the reason, exit 2, nothing written.

The table runs the real CLI (``python -m nestc``) once per case; a second, in-process pass checks
that the Python API raises a :class:`~nestc.errors.NestcError` subclass for the same files, never
an arbitrary exception. Cases that only a training command can see (several inputs, an integer
input, ambiguous outputs, nothing to train) run ``compress``; it must stop before touching data.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import errors_helpers as h
import numpy as np
import onnxruntime as ort
import pytest
from errors_helpers import Run, assert_clean_failure, run_cli, run_cli_many, save
from onnx import helper

from nestc import api
from nestc.compression import compress
from nestc.errors import ModelError
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig

COMPRESS = ("--data", "embedded", "--limit", "200", "--max-epochs", "1", "--device", "cpu", "--quiet")


@dataclass(frozen=True)
class Case:
    """One bad model: how to write it under a folder, what the message must say, which command sees it."""

    id: str
    write: Callable[[Path], Path]
    mentions: tuple[str, ...]
    command: str = "compact"
    extra: tuple[str, ...] = ()


def _file(name: str, content: Callable[[], object]) -> Callable[[Path], Path]:
    return lambda folder: save(content(), folder / name)  # type: ignore[arg-type]


def _folder(folder: Path) -> Path:
    (folder / "folder.onnx").mkdir()
    return folder / "folder.onnx"


def _beside(name: str, content: Callable[[], object]) -> Callable[[Path], Path]:
    """In a subfolder, so that ``../..`` from the model leaves the test's folder."""
    return lambda folder: save(content(), folder / "models" / name)  # type: ignore[arg-type]


def _linked_out(folder: Path) -> Path:
    """``w1.bin`` beside the model is a symlink to a file outside its folder."""
    model = save(h.external_data("w1.bin"), folder / "models" / "ext.onnx")
    (folder / "secret.bin").write_bytes(bytes(96))
    (folder / "models" / "w1.bin").symlink_to(folder / "secret.bin")
    return model


CASES = [
    Case("missing path", lambda folder: folder / "absent.onnx", ("no such file",)),
    Case("directory", _folder, ("is a directory",)),
    Case("empty file", _file("empty.onnx", lambda: b""), ("file is empty",)),
    Case("random bytes", _file("random.onnx", lambda: np.random.default_rng(0).bytes(4096)), ("not an ONNX model",)),
    Case("truncated protobuf", _file("truncated.onnx", lambda: h.small_model().SerializeToString()[:301]),
         ("not an ONNX model",)),
    Case("gzip of a model", _file("model.onnx", lambda: gzip.compress(h.small_model().SerializeToString(), mtime=0)),
         ("not an ONNX model but a gzip file", "unpack")),
    Case("TensorProto bytes", _file("tensor.onnx", h.tensor_bytes), ("not an ONNX model",)),
    Case("GraphProto bytes", _file("graph.onnx", h.graph_bytes), ("not an ONNX model",)),
    Case("fails onnx.checker", _file("unchecked.onnx", h.fails_checker),
         ("onnx.checker", "'undefined_tensor'", "is not output of any previous nodes")),
    Case("input without a shape", _file("shapeless.onnx", h.shapeless_input),
         ("fails onnx.checker", "graph inputs and outputs without a shape: 'x'")),
    Case("opset 99", _file("future.onnx", lambda: h.make_model(h.mlp_graph(), opset=99)),
         ("opset 99", "export the model with")),
    Case("unsupported ops", _file("unsupported.onnx", h.unsupported_ops),
         ("2 node(s)", "'my_topk' (TopK)", "'my_custom' (com.example.Frobnicate)")),
    Case("op outside the ONNX standard", _file("erfc.onnx", h.undefined_op),
         ("'gelu/Erfc' (Erfc)", "Erfc is not an ONNX operator at opset", "the exporter wrote an invalid file")),
    Case("quantized model", h.quantized, ("unsupported operators", "MatMulInteger", "the model is quantized",
                                          "float model it was quantized from")),
    *[Case(f"control flow {op}", _file(f"{op}.onnx", lambda op=op: h.control_flow(op)),
           ("control flow is not supported", f"'my_{op}' ({op})")) for op in ("If", "Loop", "Scan")],
    Case("no float weights", _file("plain.onnx", h.no_float_weights), ("no float weights",), "compress", COMPRESS),
    *[Case(f"NaN weights ({command})", _file("nan.onnx", h.nan_weights), ("weight(s) w1 hold NaN or Inf",), command,
           extra) for command, extra in (("compress", COMPRESS), ("train", ("--data", "embedded", "--device", "cpu")))],
    Case("two inputs", _file("two_inputs.onnx", h.two_inputs), ("2 inputs (a, b)", "one data tensor"), "compress",
         COMPRESS),
    Case("two outputs", _file("two_outputs.onnx", h.two_outputs), ("logits, aux_logits", "--output-name"), "compress",
         COMPRESS),
    Case("unknown --output-name", _file("two_outputs.onnx", h.two_outputs), ("no output named 'scores'",), "compress",
         (*COMPRESS, "--output-name", "scores")),
    Case("--output-name of labels", _file("labels.onnx", h.labels_output),
         ("output 'label' is int64 [N], not class scores [N, classes]",), "compress",
         (*COMPRESS, "--output-name", "label")),
    Case("integer input", _file("ids.onnx", h.integer_input), ("input 'ids' is int64", "float data or uint8 pixels"),
         "compress", COMPRESS),
    *[Case(f"weights fed as inputs ({command})", _file("fed.onnx", h.fed_weights),
           ("weights are graph inputs, not stored in the file", "'fc1' (Gemm) reads w1, b1", "export_params=True"),
           command, extra) for command, extra in (("compact", ()), ("compress", COMPRESS))],
    *[Case(f"open channel dimension ({command})", _file("open_channels.onnx", lambda: h.open_cnn("C")),
           ("input 'x' is declared [N, C, H, W], so nestc ran it as [1, 32, 32, 32]", "node 'conv' (Conv)",
            "export the model with fixed input dimensions"), command, extra) for command, extra in
      (("compact", ()), ("compress", COMPRESS))],
    *[Case(f"scores not one row per sample ({command})", _file("rows.onnx", h.fixed_rows),
           ("output 'logits' has 9 rows for a batch of", "one row of class scores per sample"), command, extra)
      for command, extra in (("compress", COMPRESS), ("train", ("--data", "embedded", "--device", "cpu")))],
    Case("external data missing", _beside("ext.onnx", lambda: h.external_data("w1.bin")),
         ("external data file 'w1.bin'", "missing")),
    Case("external data ../../etc/passwd", _beside("ext.onnx", lambda: h.external_data("../../etc/passwd")),
         ("'../../etc/passwd'", "outside the model's folder")),
    Case("external data through a symlink", _linked_out,
         ("external data of tensor 'w1' points outside the model's folder ('w1.bin')",)),
    Case("external data absolute path", _beside("ext.onnx", lambda: h.external_data("/etc/passwd")),
         ("'/etc/passwd'", "outside the model's folder")),
]


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@dataclass
class Outcome:
    """What the CLI did for one case, and the files to check."""

    run: Run
    model: Path
    out: Path
    digest_before: str | None


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once through the CLI, all in one interpreter (see ``run_cli_many``)."""
    base = tmp_path_factory.mktemp("bad_models")
    prepared = []
    for index, case in enumerate(CASES):
        folder = base / f"case{index}"
        folder.mkdir()
        model = case.write(folder)
        prepared.append((case, model, folder / "out.onnx", _digest(model)))
    runs = run_cli_many([[case.command, model, "-o", out, *case.extra] for case, model, out, _ in prepared])
    return {case.id: Outcome(run, model, out, digest) for (case, model, out, digest), run in zip(prepared, runs)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_model_is_one_line_exit_2_and_no_output(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    assert_clean_failure(outcome.run, str(outcome.model), *case.mentions,
                         outputs=(outcome.out, Path(f"{outcome.out}.ckpt")))
    assert _digest(outcome.model) == outcome.digest_before, "the input was modified"


@pytest.mark.parametrize("case", [CASES[3]], ids=lambda c: c.id)
def test_console_entry_point_prints_the_same_line(case: Case, outcomes: dict[str, Outcome], tmp_path: Path) -> None:
    """``python -m nestc`` in its own process says exactly what the grouped run recorded."""
    model = case.write(tmp_path)
    out = tmp_path / "out.onnx"
    run = run_cli(case.command, model, "-o", out, *case.extra)
    expected = outcomes[case.id].run.stderr.replace(str(outcomes[case.id].model), str(model))
    assert (run.code, run.stderr) == (2, expected)
    assert not out.exists()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_model_raises_a_typed_error_in_the_api(case: Case, tmp_path: Path) -> None:
    model = case.write(tmp_path)
    out = tmp_path / "out.onnx"
    if case.command == "compact":
        call = lambda: api.compact(model, out)  # noqa: E731
    elif case.command == "train":
        call = lambda: api.train(model, out, "embedded", TrainConfig(device="cpu", quiet=True))  # noqa: E731
    else:
        output_name = case.extra[case.extra.index("--output-name") + 1] if "--output-name" in case.extra else None
        call = lambda: compress(model, out, "embedded", NestConfig(max_epochs=1),  # noqa: E731
                                TrainConfig(device="cpu", quiet=True), limit=200, output_name=output_name,
                                log=lambda _line: None)
    with pytest.raises(ModelError) as err:
        call()
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_a_model_that_fails_on_the_data_is_named(tmp_path: Path) -> None:
    """eval runs the model on the data (to choose the input normalisation) before onnxruntime sees it; an
    error there names the file as every other does (it began "while executing node 'fc1'")."""
    model = save(h.mismatched_weights(), tmp_path / "mismatched.onnx")
    data = h.image_npz(tmp_path / "features.npz", shape=(4,), classes=3, dtype=np.float32)
    with pytest.raises(ModelError, match=re.escape(f"{model}: while executing node 'fc1' (Gemm)")):
        api.evaluate(model, str(data))


def test_old_opset_and_chosen_head_work(tmp_path: Path) -> None:
    """Not errors: opset 7 is converted by onnx's converter (the compact output computes what the input
    does), and the two-head model that is ambiguous on its own works once ``--output-name`` picks one."""
    graph = h.mlp_graph()
    graph.input.extend([helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer])
    old = save(h.make_model(graph, opset=7, ir_version=3), tmp_path / "opset7.onnx")
    heads = save(h.two_outputs(), tmp_path / "two_outputs.onnx")
    data = h.image_npz(tmp_path / "features.npz", shape=(4,), classes=3, dtype=np.float32)
    out = tmp_path / "out.onnx"
    converted, chosen = run_cli_many([["compact", old, "-o", out],
                                      ["eval", heads, "--data", data, "--output-name", "aux_logits", "--json"]])
    assert converted.code == 0, converted.stderr
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    want = ort.InferenceSession(str(old)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert chosen.code == 0, chosen.stderr
    assert '"samples": 20' in chosen.stdout


def test_open_height_and_width_work(tmp_path: Path) -> None:
    """A CNN exported with a free height and width is inspected and compacted (its poolings once left
    nothing of a 1x1 probe), and the compacted file still takes any size and computes what the input does."""
    model = save(h.open_cnn(), tmp_path / "open.onnx")
    assert api.inspect(model).params == 4 * 9 + 3 * 4 + 3
    api.compact(model, tmp_path / "out.onnx")
    for side in (8, 20):
        x = np.random.default_rng(side).standard_normal((2, 1, side, side)).astype(np.float32)
        want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
        got = ort.InferenceSession(str(tmp_path / "out.onnx")).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_output_wider_than_the_classes_is_pointed_out(tmp_path: Path) -> None:
    """``--output-name`` may pick an output that is no class-score head (a feature vector, say): it is
    trained all the same, so the user is told how many of its scores no label asks for."""
    heads = save(h.two_outputs(), tmp_path / "two_outputs.onnx")
    data = h.image_npz(tmp_path / "features.npz", shape=(4,), classes=2, dtype=np.float32)
    lines: list[str] = []
    compress(heads, tmp_path / "out.onnx", data, NestConfig(max_epochs=0.5, max_acc_drop=100),
             TrainConfig(device="cpu", quiet=True), output_name="aux_logits", log=lines.append)
    assert any("'aux_logits' has 3 scores" in line and "2 classes" in line for line in lines), lines
