"""nestc against Han et al. at several epoch budgets, on the same trained dense model.

The NeST table gives every method 40 epochs of compression. Han et al.'s fixed schedule (10 % of every
layer per round) spends them on 40 rounds and its curve ends where accuracy falls off, so more epochs
only help it when each round retrains longer; nestc's grow-and-prune cycles use whatever the budget
leaves after pruning stalls. This script asks how the ratio between the two moves with the budget:
for every budget ``C`` Han et al. retrains ``C / 40`` epochs per round (the same 40 rounds, each
retrained longer) and ``nestc.compress`` runs its defaults with ``max_epochs = C``.

Usage::

    python benchmarks/budget_sweep.py --model lenet-300-100 --budgets 40,80,160 --seeds 0,1,2 --threads 1

Writes ``<out>/budget-sweep-<model>[-<data>].json`` and prints one markdown row per budget (medians over seeds)
and one per run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from han_pruning import han_pruning  # benchmarks/ is on sys.path: this script's folder
from machine import machine_info
from nest_table import Context, evaluation_tensors, measure_file, prepare_data, run_dense, settings_for

import nestc

HAN_ROUNDS = 40  # Han et al.'s rounds at every budget: 0.9 ** 40 leaves 1.5 % of the weights


def run_budget(ctx: Context, budget: float, seed: int) -> dict:
    """Han et al. and nestc from the dense model with ``budget`` epochs each, training seed ``seed``."""
    ctx.seed = seed
    dense = ctx.dense_path
    assert dense is not None
    han_path = ctx.output(f"han-{budget:g}")
    started = time.perf_counter()
    han = han_pruning(str(dense), str(han_path), ctx.data, ctx.train_config(), ctx.settings.max_acc_drop,
                      budget, retrain_epochs=budget / HAN_ROUNDS)
    han_wall = time.perf_counter() - started
    nest_path = ctx.output(f"nestc-{budget:g}")
    config = nestc.NestConfig(max_acc_drop=ctx.settings.max_acc_drop, max_epochs=budget)
    started = time.perf_counter()
    result = nestc.compress(dense, nest_path, data=ctx.data, config=config, train_config=ctx.train_config())
    nest_wall = time.perf_counter() - started
    han_row, nest_row = measure_file(han_path, ctx), measure_file(nest_path, ctx)
    return {
        "budget": budget, "seed": seed,
        "han": {"nonzero": han_row["nonzero_params"], "accuracy": han_row["accuracy"], "met": han.met_budget,
                "wall_s": round(han_wall, 1), "curve": han.history},
        "nestc": {"nonzero": nest_row["nonzero_params"], "accuracy": nest_row["accuracy"],
                  "met": result.met_budget, "stopped_by": result.report.get("stopped_by"),
                  "wall_s": round(nest_wall, 1)},
        "ratio": han_row["nonzero_params"] / max(nest_row["nonzero_params"], 1),
    }


def format_tables(runs: Sequence[dict]) -> str:
    """Medians per budget, then every run."""
    lines = ["| budget (epochs) | Han et al. non-zero (median) | nestc non-zero (median) | ratio (median) |",
             "|---:|---:|---:|---:|"]
    for budget in sorted({r["budget"] for r in runs}):
        group = [r for r in runs if r["budget"] == budget]
        lines.append(f"| {budget:g} | {statistics.median(r['han']['nonzero'] for r in group):,.0f} | "
                     f"{statistics.median(r['nestc']['nonzero'] for r in group):,.0f} | "
                     f"{statistics.median(r['ratio'] for r in group):.2f}x |")
    lines += ["", "| budget | seed | Han et al. | nestc | ratio |", "|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['budget']:g} | {r['seed']} | {r['han']['nonzero']:,} at {r['han']['accuracy']:.2%} | "
                     f"{r['nestc']['nonzero']:,} at {r['nestc']['accuracy']:.2%} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet-300-100", choices=("lenet-300-100", "lenet-5"))
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--budgets", default="40,80,160", help="compression epochs, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="training samples (debug)")
    parser.add_argument("--dense-epochs", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = replace(settings_for(args.model, limit=args.limit, dense_epochs=args.dense_epochs),
                       data=args.data, threads=args.threads)
    started = time.perf_counter()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nestc-budget-") as tmp:
        workdir = Path(tmp)
        spec = prepare_data(settings, workdir)
        probe = workdir / "shape.onnx"
        nestc.seed(settings.model, probe)
        x_test, y_test, calibration, input_name = evaluation_tensors(spec, probe, 1, 1)
        ctx = Context(settings, workdir, spec, x_test, y_test, calibration, input_name)
        run_dense(ctx)
        for budget in (float(b) for b in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                runs.append(run_budget(ctx, budget, seed))
                r = runs[-1]
                print(f"budget {budget:g} seed {seed}: Han {r['han']['nonzero']:,} at {r['han']['accuracy']:.2%}, "
                      f"nestc {r['nestc']['nonzero']:,} at {r['nestc']['accuracy']:.2%} ({r['ratio']:.2f}x)",
                      flush=True)
    payload = {"model": args.model, "data": args.data, "machine": machine_info(),
               "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "total_seconds": round(time.perf_counter() - started, 1), "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    other_data = "" if args.data == "fashion-mnist" else f"-{Path(args.data).stem}"
    (out / f"budget-sweep-{args.model}{other_data}.json").write_text(json.dumps(payload, indent=1))
    print(format_tables(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
