"""onnxruntime sessions: the judge of every output nestc writes.

The CUDA execution provider is used when the installed onnxruntime build has it (``onnxruntime-gpu``);
otherwise the CPU provider. Outputs that onnxruntime returns as Python objects (ZipMap's list of
dicts) are turned back into arrays so they can be compared.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

from nestc.errors import ModelError, first_line


def providers(exact: bool = False) -> list[str | tuple[str, dict[str, str]]]:
    """Execution providers to use, best first.

    ``exact`` keeps the CUDA provider in float32 proper: by default it runs float32 convolutions and
    products in TF32 on Ampere and newer GPUs, whose 10-bit mantissa moves outputs by about 1e-3, ten
    times what a comparison of two computations of one function allows.
    """
    available = ort.get_available_providers()
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0"}) if exact else "CUDAExecutionProvider"
    preferred = [cuda] if "CUDAExecutionProvider" in available else []
    return [*preferred, "CPUExecutionProvider"]


def session(model: onnx.ModelProto | bytes, label: str = "model", threads: int | None = None,
            exact: bool = False) -> ort.InferenceSession:
    """An inference session for ``model``; a load failure is a :class:`ModelError` naming ``label``.

    ``exact``: computed in float32 throughout, for comparisons (see :func:`providers`).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=providers(exact))
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ModelError(f"{label}: onnxruntime cannot load it ({first_line(exc)})") from exc


FEEDS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
         "tensor(uint8)": np.uint8}
"""Input types nestc can feed its (float32) data to, and the numpy type each is fed in (uint8: pixels, which
the data hold as whole numbers, :func:`nestc.data.fit_to_input`)."""


def run(sess: ort.InferenceSession, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``sess`` on positional ``inputs``; every output as a numpy array.

    Float data are given the type the session declares (nestc's data is float32; a model stored in float16
    takes float16, one that takes pixels uint8).
    """
    feeds = {meta.name: _as_declared(value, meta.type) for meta, value in zip(sess.get_inputs(), inputs, strict=True)}
    return [_as_array(out) for out in sess.run(None, feeds)]


def run_batched(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 1024) -> list[np.ndarray]:
    """Run a single-input session over ``x`` in batches and concatenate each output.

    A file that fixes its batch (torch's dynamo exporter writes batch 1) is run in chunks of that size.
    """
    fixed = sess.get_inputs()[0].shape[0] if sess.get_inputs()[0].shape else None
    if isinstance(fixed, int) and fixed > 0:
        batch_size = fixed
    parts = [run(sess, [x[i: i + batch_size]]) for i in range(0, len(x), batch_size)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def latency_ms(sess: ort.InferenceSession, x: np.ndarray, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one ``run`` on ``x``, in milliseconds."""
    return interleaved_latency_ms({"model": sess}, x, repeats, warmup)["model"]


def interleaved_latency_ms(sessions: dict[str, ort.InferenceSession], x: np.ndarray, repeats: int = 20,
                           warmup: int = 3) -> dict[str, float]:
    """Median wall time of one ``run`` of each session on ``x``, in milliseconds, measured in rounds of one
    run per session, so that load from other processes and clock changes hit every session alike (two
    models timed one after the other on a shared machine can differ by 2x for no reason of their own)."""
    for _ in range(warmup):
        for sess in sessions.values():
            run(sess, [x])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, sess in sessions.items():
            start = time.perf_counter()
            run(sess, [x])
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values) * 1000) for name, values in times.items()}


def _as_declared(value: np.ndarray, declared: str) -> np.ndarray:
    dtype = FEEDS.get(declared)
    return value.astype(dtype) if dtype is not None and value.dtype.kind == "f" and value.dtype != dtype else value


def _as_array(value: object) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)
