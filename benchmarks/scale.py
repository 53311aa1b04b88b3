"""Scale: import, compact and emit of the CIFAR VGG-16 and ResNet-18 seeds on the CPU.

For each architecture (``nestc.seed(arch)``: full width, dense; VGG-16 has 14.7M parameters) and
each variant of it, a fresh Python process times every stage of the ONNX-in/ONNX-out pipeline and
reads its peak resident memory (``VmHWM``, which also sees torch's allocations, unlike
tracemalloc) after each stage:

- ``load_model``: read, check and normalise the ONNX file;
- ``Network``: build the trainable IR;
- ``compact``: :func:`nestc.passes.compact.compact` (dead-unit analysis and removal);
- ``emit``: :func:`nestc.ir.emit.emit_model`, then ``SerializeToString``.

Variants: ``seed`` (nothing to remove: the analysis alone), ``half dead`` (every other channel of
every convolution made dead: weights and bias zero, BN shift -1, so ReLU outputs 0; compact removes
exactly those) and ``half constant`` (every other filter's weights zero, bias kept: the channels are
constant, not zero, so compact must prove which of them it can fold away).

The target of the issue is at most 10 s for VGG-16 (sum of the four stages). After the timed
stages, the compacted model is checked against the original with onnxruntime (not timed).

Usage::

    python benchmarks/scale.py                 # both architectures, all variants
    python benchmarks/scale.py --archs vgg16 --variants seed
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ARCHS = ("vgg16", "resnet18")
VARIANTS = ("seed", "half dead", "half constant")
TARGET_SECONDS = 10.0
STAGES = ("load_model", "network", "compact", "emit", "serialize")


# ------------------------------------------------------------------------------------- the models


def make_model(arch: str, variant: str, folder: Path) -> Path:
    """Write ``arch``'s dense seed, with the variant's planted channels, to ``folder``."""
    import nestc

    path = folder / f"{arch}-{variant.replace(' ', '-')}.onnx"
    nestc.seed(arch, path)
    if variant != "seed":
        import onnx

        model = onnx.load(str(path))
        plant_channels(model, dead=variant == "half dead")
        onnx.save(model, str(path))
    return path


def plant_channels(model, dead: bool) -> None:
    """Zero every other output channel of every Conv followed by BatchNormalization.

    ``dead``: also zero the conv bias and set the BN shift to -1, so the channel is 0 after ReLU;
    otherwise the channel is a non-zero constant.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def edit(name: str, value: float) -> None:
        array = numpy_helper.to_array(inits[name]).copy()
        array[1::2] = value
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    for node in model.graph.node:
        conv = producer.get(node.input[0])
        if node.op_type != "BatchNormalization" or conv is None or conv.op_type != "Conv":
            continue
        edit(conv.input[1], 0.0)
        if dead:
            if len(conv.input) > 2 and conv.input[2]:
                edit(conv.input[2], 0.0)
            edit(node.input[2], -1.0)


# ---------------------------------------------------------------------------------- one measurement


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    ``VmHWM`` from /proc/self/status where it exists: ``ru_maxrss`` of a child process carries over
    the parent's peak from before ``exec`` (Linux keeps it across exec), which would hide this
    process's own figure. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024, 1)


def measure(path: Path, threads: int | None = None) -> dict:
    """Time each stage on ``path`` in this process; peak RSS after each; outputs checked afterwards."""
    started = time.perf_counter()
    import torch

    from nestc.frontends import load_model
    from nestc.ir.emit import emit_model
    from nestc.ir.network import Network
    from nestc.passes.compact import compact
    from nestc.stats import model_stats

    if threads:
        torch.set_num_threads(threads)
    seconds: dict[str, float] = {"imports": time.perf_counter() - started}
    rss: dict[str, float] = {"imports": peak_rss_mb()}

    def stage(name: str, work):
        begin = time.perf_counter()
        value = work()
        seconds[name] = time.perf_counter() - begin
        rss[name] = peak_rss_mb()
        return value

    model = stage("load_model", lambda: load_model(path))
    net = stage("network", lambda: Network(model))
    before = model_stats(net)  # not timed
    result = stage("compact", lambda: compact(net))
    emitted = stage("emit", lambda: emit_model(net))
    data = stage("serialize", emitted.SerializeToString)
    after = model_stats(net)
    return {
        "file": path.name, "file_bytes_in": path.stat().st_size, "file_bytes_out": len(data),
        "params_before": before.params, "params_after": after.params, "macs_before": before.macs,
        "macs_after": after.macs, "removed": sum(result.removed.values()),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "pipeline_seconds": round(sum(seconds[s] for s in STAGES), 3),
        "peak_rss_mb": rss, "max_abs_diff": output_difference(path, data),
        "torch_threads": torch.get_num_threads(),
    }


def output_difference(original: Path, compacted: bytes, samples: int = 4) -> float:
    """Largest output difference between the two models on random inputs (onnxruntime)."""
    import numpy as np
    import onnx

    from nestc import runtime

    sessions = [runtime.session(onnx.load(str(original)), "original"), runtime.session(compacted, "compacted")]
    shape = [samples, *[d if isinstance(d, int) else 1 for d in sessions[0].get_inputs()[0].shape[1:]]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a, b = (runtime.run(s, [x])[0] for s in sessions)
    return float(np.abs(a - b).max())


def measure_in_child(path: Path, threads: int | None, timeout: float) -> dict:
    """:func:`measure` in a fresh interpreter, so peak memory and caches belong to this model alone."""
    command = [sys.executable, __file__, "--child", str(path)] + (["--threads", str(threads)] if threads else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"file": path.name, "error": f"took more than {timeout:g} s"}
    if done.returncode != 0:
        return {"file": path.name, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ table


def format_table(rows: Sequence[dict]) -> str:
    """A markdown table: one row per model, seconds per stage, peak memory, what compact removed."""
    head = ("| model | variant | params | after compact | load_model s | Network s | compact s | emit s | "
            "serialize s | total s | RSS after imports MiB | peak RSS MiB | max abs diff |")
    lines = [head, "|---|---|" + "---:|" * 11]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['arch']} | {row['variant']} | failed: {row['error']} |" + " – |" * 10)
            continue
        s = row["seconds"]
        lines.append(
            f"| {row['arch']} | {row['variant']} | {row['params_before']:,} | {row['params_after']:,} | "
            f"{s['load_model']:.2f} | {s['network']:.2f} | {s['compact']:.2f} | {s['emit']:.2f} | "
            f"{s['serialize']:.2f} | {row['pipeline_seconds']:.2f} | {row['peak_rss_mb']['imports']:,.0f} | "
            f"{row['peak_rss_mb']['serialize']:,.0f} | "
            f"{row['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def check_target(rows: Sequence[dict]) -> dict:
    """VGG-16 seed pipeline at most :data:`TARGET_SECONDS` (computed, not assumed)."""
    row = next((r for r in rows if r["arch"] == "vgg16" and r["variant"] == "seed" and "error" not in r), None)
    if row is None:
        return {"target": f"VGG-16 seed import+compact+emit <= {TARGET_SECONDS:g} s", "met": False,
                "value": None, "detail": "not measured"}
    return {"target": f"VGG-16 seed import+compact+emit <= {TARGET_SECONDS:g} s",
            "met": row["pipeline_seconds"] <= TARGET_SECONDS, "value": row["pipeline_seconds"],
            "detail": "sum of load_model, Network, compact, emit, serialize"}


# -------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated: " + ", ".join(ARCHS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model before giving up")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every architecture and variant, print the table, write ``<out>/scale.json``."""
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.threads)))
        return 0
    from machine import machine_info

    started = time.perf_counter()
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nestc_scale_") as folder:
        for arch in args.archs.split(","):
            for variant in args.variants.split(","):
                path = make_model(arch, variant, Path(folder))
                row = {"arch": arch, "variant": variant, **measure_in_child(path, args.threads, args.timeout)}
                rows.append(row)
                print(f"{arch} {variant}: {row.get('pipeline_seconds', row.get('error'))} s", flush=True)
    payload = {
        "machine": machine_info(), "load_average_at_start": load_at_start,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - started, 1), "rows": rows, "target": check_target(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "scale.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    target = payload["target"]
    print(f"\n{payload['machine']['cpu']}, {payload['machine']['cores']} cores, {payload['date']}\n")
    print(format_table(rows))
    print(f"\n- [{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['value']} s")
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
