"""Where one training step's time goes, and the whole step with and without the compiled CPU ops.

    python benchmarks/profile_step.py profile --model mobilenet_v3_small_100
    python benchmarks/profile_step.py step --models mobilenet_v3_small_100,mobilenet_v2_100 \\
        --variants plain,kernels-norm_act-squeeze_excite,kernels --out benchmarks/results/step_kernels

Both build the training step as ``bench.py``'s "ours" variant does (the model's published recipe:
its loss with label smoothing, momentum optimizer, fixed loss scale, fp32 on CPU; batch 32, 224 px,
synthetic tensors, graph mode, threads = cores).

``profile``: MindSpore's ``Profiler`` over ``--steps`` steps after warm-up, then one row per
(op type, innermost cell) with forward and backward milliseconds per step; a compiled op is
listed as ``Custom`` under the layer that runs it. On CPU the ops of a step run one after another,
so the op total is close to the step's wall time; the difference is the framework's per-op cost.

``step``: every variant's training step built in one process, then ``--rounds`` rounds in which
each variant runs ``--steps`` steps in turn: machine load slows all of them alike, so their ratios
hold on a shared machine. Variants: ``plain`` (MindSpore's ops), ``kernels`` (every compiled op),
``kernels-NAME[-NAME...]`` (the compiled ops except ``kernels.make_NAME``, e.g.
``kernels-norm_act-squeeze_excite`` for the model without the fused BatchNorm + activation and
squeeze-excite ops).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import glob
import json
import os
import statistics
import sys
import tempfile
import time
import types
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402  (find_recipe, bench_config: the same recipe handling as bench.py)

import mindcv_mobile  # noqa: E402, F401  (first: the package's oneDNN ISA rule, before MindSpore loads)

# isort: split
import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from mindcv_mobile import build, kernels, runtime  # noqa: E402


def loadavg() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


@contextlib.contextmanager
def kernels_without(names: list):
    """Layers built inside get no compiled op from ``kernels.make_<name>`` for each name."""
    with contextlib.ExitStack() as stack:
        for name in names:
            if not hasattr(kernels, f"make_{name}"):
                raise ValueError(f"unknown compiled op {name!r}: kernels has no make_{name}")
            stack.enter_context(mock.patch.object(kernels, f"make_{name}", lambda *args: (None, None)))
        yield


def build_step(model: str, variant: str, batch: int, size: int):
    """``(train_step, x, y)`` for one variant (see the module docstring)."""
    args = types.SimpleNamespace(model=model, batch_size=batch, image_size=size, recipe="")
    cfg = bench.bench_config(args, epoch_size=1, warmup_epochs=0, decay_epochs=1)
    rt = runtime.init_runtime(cfg)
    precision = build.build_precision(cfg, "CPU")
    head, *excluded = variant.split("-")
    if head not in ("plain", "kernels") or (head == "plain" and excluded):
        raise ValueError(f"variant must be 'plain', 'kernels' or 'kernels-NAME[-NAME...]', got {variant!r}")
    use = head == "kernels"
    if use and not rt.cpu_kernels:
        raise RuntimeError(f"variant {variant!r} needs the compiled CPU kernels: {kernels.library()[1]}")
    with kernels_without(excluded):
        net = build.build_model(cfg, cpu_kernels=use, amp_level=precision.amp_level)
    optimizer = build.build_optimizer(cfg, net, build.build_lr_schedule(cfg, steps_per_epoch=1000))
    step = build.build_train_step(cfg, net, optimizer, precision)
    step.set_train(True)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    y = Tensor(rng.integers(0, cfg.num_classes, batch).astype(np.int32))
    return step, x, y


# ------------------------------------------------------------------------------------- profile
def _innermost_cell(full_name: str) -> str:
    """``.../3-SqueezeExcite/gate-HardSigmoid/Add-op2`` -> ``HardSigmoid``."""
    for part in reversed(full_name.split("/")[:-1]):
        if "-" in part and not part.startswith("Grad_"):
            return part.split("-", 1)[1]
    return "?"


def op_rows(detail_csv: str, steps: int) -> list:
    """One dict per (op type, cell): fwd/bwd ms and calls per step, sorted by total time."""
    table: dict = collections.defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0, "calls": 0})
    with open(detail_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["full_op_name"]
            label = f"{row['op_type']} @ {_innermost_cell(name)}"
            if "SqueezeExcite" in name and "SqueezeExcite" not in label:
                label += " (SE)"
            key = "bwd" if name.startswith("Gradients/") else "fwd"
            table[label][key] += float(row["op_total_time(ms)"]) / steps
            table[label]["calls"] += int(row["op_occurrences"])
    rows = [
        dict(op=label, total=v["fwd"] + v["bwd"], fwd=v["fwd"], bwd=v["bwd"], calls=v["calls"] / steps)
        for label, v in table.items()
    ]
    return sorted(rows, key=lambda r: -r["total"])


def profile(args) -> dict:
    step, x, y = build_step(args.model, args.variant, args.batch_size, args.image_size)
    for _ in range(1 + args.warmup):
        step(x, y).asnumpy()
    wall = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step(x, y).asnumpy()
        wall.append(time.perf_counter() - start)
    from mindspore.profiler import Profiler

    with tempfile.TemporaryDirectory(prefix="profile_step_") as out:
        prof = Profiler(output_path=out)
        for _ in range(args.steps):
            step(x, y).asnumpy()
        prof.stop()
        prof.analyse()
        found = glob.glob(os.path.join(out, "**", "cpu_op_detail_info_*.csv"), recursive=True)
        if not found:
            raise RuntimeError(f"the profiler wrote no cpu_op_detail_info_*.csv under {out}")
        rows = op_rows(found[0], args.steps)
        with open(found[0], newline="", encoding="utf-8") as f:
            slowest = sorted(
                ((float(r["op_total_time(ms)"]) / args.steps, r["full_op_name"]) for r in csv.DictReader(f)),
                reverse=True,
            )[: args.detail]
    return {
        "model": args.model,
        "variant": args.variant,
        "wall_ms": {"min": min(wall) * 1e3, "median": statistics.median(wall) * 1e3, "max": max(wall) * 1e3},
        "op_ms": sum(r["total"] for r in rows),
        "rows": rows,
        "slowest": slowest,
    }


def profile_markdown(result: dict, limit: int) -> str:
    w = result["wall_ms"]
    lines = [
        f"{result['model']} ({result['variant']}): step {w['median']:.0f} ms wall (min {w['min']:.0f}, max "
        f"{w['max']:.0f}) without the profiler; op time {result['op_ms']:.0f} ms per step",
        "",
        "| op @ innermost cell | fwd ms | bwd ms | total ms | % | calls/step |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"][:limit]:
        lines.append(
            f"| {r['op']} | {r['fwd']:.1f} | {r['bwd']:.1f} | {r['total']:.1f} | "
            f"{100 * r['total'] / result['op_ms']:.1f} | {r['calls']:.0f} |"
        )
    rest = result["rows"][limit:]
    if rest:
        lines.append(
            f"| {len(rest)} more | | | {sum(r['total'] for r in rest):.1f} | | {sum(r['calls'] for r in rest):.0f} |"
        )
    if result["slowest"]:
        lines += ["", "| slowest single ops | ms/step |", "|---|---|"]
        lines += [f"| {name} | {ms:.2f} |" for ms, name in result["slowest"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- step
def alternate(args, model: str) -> dict:
    steps = {v: build_step(model, v, args.batch_size, args.image_size) for v in args.variants}
    for step, x, y in steps.values():
        for _ in range(1 + args.warmup):
            step(x, y).asnumpy()
    wall: dict = {v: [] for v in steps}
    cpu: dict = {v: [] for v in steps}
    for _ in range(args.rounds):
        for v, (step, x, y) in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(x, y).asnumpy()
            wall[v].append((time.perf_counter() - start) / args.steps * 1e3)
            cpu[v].append((time.process_time() - cpu_start) / args.steps * 1e3)

    def stats(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}

    return {v: {"ms_per_step": stats(wall[v]), "cpu_ms_per_step": stats(cpu[v])} for v in steps}


def step_markdown(report: dict) -> str:
    first = report["variants"][0]
    lines = [
        f"batch {report['batch_size']}, {report['image_size']} px, {report['rounds']} rounds x {report['steps']} "
        f"steps per variant, alternated; load average {report['loadavg_start']} -> {report['loadavg_end']}",
        "",
        f"| model | variant | ms/step median (min-max) | CPU ms/step median | vs {first} (median) |",
        "|---|---|---|---|---|",
    ]
    for model, result in report["results"].items():
        base = result[first]["ms_per_step"]["median"]
        for v, r in result.items():
            t = r["ms_per_step"]
            lines.append(
                f"| {model} | {v} | {t['median']:.0f} ({t['min']:.0f}-{t['max']:.0f}) | "
                f"{r['cpu_ms_per_step']['median']:.0f} | {base / t['median']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("profile", "step"):
        s = sub.add_parser(name)
        s.add_argument("--batch-size", type=int, default=32)
        s.add_argument("--image-size", type=int, default=224)
        s.add_argument("--warmup", type=int, default=2, help="steps after the first (compiling) one")
        s.add_argument("--out", default="", help="write <out>.json and <out>.md")
    prof = sub.choices["profile"]
    prof.add_argument("--model", default="mobilenet_v3_small_100")
    prof.add_argument("--variant", default="kernels", help="plain, kernels or kernels-NAME (see above)")
    prof.add_argument("--steps", type=int, default=3, help="profiled steps (and as many timed without it)")
    prof.add_argument("--limit", type=int, default=40, help="table rows")
    prof.add_argument("--detail", type=int, default=0, help="also list this many slowest single ops")
    step = sub.choices["step"]
    step.add_argument("--models", default="mobilenet_v3_small_100")
    step.add_argument("--variants", default="plain,kernels", help="comma-separated; the first is the baseline")
    step.add_argument("--rounds", type=int, default=6)
    step.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    args = p.parse_args(argv)
    print(f"load average {loadavg()}", flush=True)
    if args.command == "profile":
        report = profile(args)
        text = profile_markdown(report, args.limit)
    else:
        args.variants = [v for v in args.variants.split(",") if v]
        report = {
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "rounds": args.rounds,
            "steps": args.steps,
            "variants": args.variants,
            "loadavg_start": loadavg(),
            "results": {},
        }
        for model in [m for m in args.models.split(",") if m]:
            report["results"][model] = alternate(args, model)
            print(
                f"{model}: "
                + ", ".join(f"{v} {r['ms_per_step']['median']:.0f} ms" for v, r in report["results"][model].items()),
                flush=True,
            )
        report["loadavg_end"] = loadavg()
        text = step_markdown(report)
    report["loadavg_end"] = loadavg()
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
