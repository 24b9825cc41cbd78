"""Time to the first training step, without and with the compile cache (``runtime.enable_compile_cache``).

    python benchmarks/first_step.py --rounds 5 --out benchmarks/results/first_step_digits_cpu

Each run is a fresh process that goes through the training path in train.py's order, with its
public pieces: ``init_runtime``, the recipe's training dataset and loader up to the first batch,
model, LR schedule, optimizer and train step from ``build``, then (cache on)
``enable_compile_cache``, then ``TrainStep.compile`` and the first step on that batch. "first step
(s)" is compile + the first step, as ``benchmarks/bench.py`` defines it; "to first step (s)" is
from the moment the process is started to the end of that step (interpreter, imports, data and
build included). Three conditions per round:

  off    the compile cache off (before)
  cold   cache on, its folder removed first: compiles and saves the graph at exit
  warm   cache on, right after cold: loads the graph cold saved

Rounds alternate the order of ``off`` and the cold/warm pair so that a slow spell of a shared
machine does not land on one condition only; tables give median and (min-max) over the rounds.
The recipe defaults to the digits one (``--epoch_size 1``, ``--num_samples`` images) on
scikit-learn's digits written once as 64 px PNGs. Runs use a private ``MINDCV_MOBILE_HOME`` (the
compiled CPU kernels of the user's cache are linked in, so no run builds them); ``--repo`` runs the
package of another tree (a copy taken before a change, or frozen while this one is edited).
Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench import environment, summarize  # noqa: E402

RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
CONDITIONS = ("off", "cold", "warm")
PHASES = (  # (key, label): where the time to the first step goes, in order
    ("start_s", "interpreter start + imports"),
    ("runtime_s", "init_runtime"),
    ("data_s", "dataset + loader to the first batch"),
    ("build_s", "model, LR schedule, optimizer, train step"),
    ("cache_s", "compile cache: key + copy of the saved graph"),
    ("compile_s", "TrainStep.compile"),
    ("step_s", "first step"),
)


# ------------------------------------------------------------------------------------ worker
def worker(args) -> dict:
    spawned = args.spawned
    import mindcv_mobile  # noqa: F401  # isort: skip  (first: the package's CPU settings precede MindSpore)
    import mindspore as ms

    from mindcv_mobile import build, runtime
    from mindcv_mobile.config import ConfigError, load_config

    marks = {"start_s": time.time() - spawned}
    clock = time.perf_counter()

    def mark(name):
        nonlocal clock
        now = time.perf_counter()
        marks[name] = now - clock
        clock = now

    overrides = dict(device_target="CPU", epoch_size=args.epoch_size, num_samples=args.num_samples)
    overrides.update(data_dir=args.data_dir, compile_cache=args.cache == "on")
    try:
        cfg = load_config(args.recipe, overrides)
    except ConfigError:  # a schema without the compile_cache key: the runtime reads it as True
        overrides.pop("compile_cache")
        cfg = load_config(args.recipe, overrides)
    rt = runtime.init_runtime(cfg)
    mark("runtime_s")
    dataset = build.build_train_dataset(cfg, 0, rt.rank, rt.group_size, rt.distribute)
    steps_per_epoch = dataset.get_dataset_size() // cfg.batch_size
    # Kept until the end: dropping an iterator stops its pipeline, which takes seconds.
    batches = build.build_train_loader(cfg, dataset).create_tuple_iterator(num_epochs=1)
    x, y = next(batches)
    mark("data_s")
    precision = build.build_precision(cfg, rt.device)
    net = build.build_model(cfg, cpu_kernels=rt.cpu_kernels, amp_level=precision.amp_level)
    lr_schedule = build.build_lr_schedule(cfg, steps_per_epoch)
    train_step = build.build_train_step(cfg, net, build.build_optimizer(cfg, net, lr_schedule), precision)
    train_step.set_train(True)
    mark("build_s")
    note = runtime.enable_compile_cache(cfg, rt, len(lr_schedule)) if args.cache == "on" else "off"
    mark("cache_s")
    train_step.compile(x, y)
    mark("compile_s")

    def step() -> float:  # the loss, or (loss, overflow, scale) when the step checks overflow
        out = train_step(x, y)
        return float((out[0] if isinstance(out, tuple) else out).asnumpy())

    loss = step()
    mark("step_s")
    marks["to_first_step_s"] = time.time() - spawned
    start = time.perf_counter()
    step()
    return {
        **marks,
        "first_step_s": marks["compile_s"] + marks["step_s"],
        "second_step_s": time.perf_counter() - start,
        "loss": loss,
        "cache": note,
        "mindspore": ms.__version__,
        "threads": runtime.CPU_SETTINGS.get("threads"),
        "cpu_kernels": rt.cpu_kernels,
        "package": os.path.dirname(mindcv_mobile.__file__),
        "steps_per_epoch": steps_per_epoch,
    }


# ------------------------------------------------------------------------------------ driver
def run_once(args, condition: str, home: str) -> dict:
    if condition == "cold":
        shutil.rmtree(os.path.join(home, "compile"), ignore_errors=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--cache", "off" if condition == "off" else "on"]
    cmd += ["--recipe", args.recipe, "--data_dir", args.data_dir, "--epoch_size", str(args.epoch_size)]
    cmd += ["--num_samples", str(args.num_samples)]
    env = dict(os.environ, MINDCV_MOBILE_HOME=home)
    if args.repo:  # the package of another tree (e.g. a copy frozen while others edit this one)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(args.repo), env.get("PYTHONPATH")]))
    env.pop("MS_COMPILER_CACHE_ENABLE", None), env.pop("MS_COMPILER_CACHE_PATH", None)
    spawned = time.time()
    proc = subprocess.run([*cmd, "--spawned", repr(spawned)], env=env, cwd=home, capture_output=True, text=True)
    process_s = time.time() - spawned
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(row, condition=condition, process_s=process_s)


def _fmt(stats: dict) -> str:
    return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def report(result: dict) -> str:
    env, s = result["environment"], result["summary"]
    lines = [
        "# Time to the first training step: compile cache off / on",
        "",
        f"`{env['command']}`",
        "",
        f"{env['cpu']}, {env['cores']} cores, MindSpore {env['mindspore']}, load average at start "
        f"{env['loadavg_start']}, at end {result['loadavg_end']}. Recipe `{os.path.relpath(result['recipe'], ROOT)}`, "
        f"epoch_size {result['epoch_size']}, num_samples {result['num_samples']}; {result['rounds']} rounds, "
        "median (min-max) in seconds.",
        "",
        "| condition | first step (compile + step) | compile | first step alone | to first step (process start) "
        "| whole process | cache line |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"off": "cache off (before)", "cold": "cache on, fresh folder", "warm": "cache on, second run"}
    for c in CONDITIONS:
        keys = ("first_step_s", "compile_s", "step_s", "to_first_step_s", "process_s")
        note = result["notes"][c].split(" (")[-1].rstrip(")") if c != "off" else "off"
        lines.append(f"| {labels[c]} | " + " | ".join(_fmt(s[c][k]) for k in keys) + f" | {note} |")
    lines += ["", "Where the time to the first step goes (median seconds):", ""]
    lines += ["| phase | " + " | ".join(labels[c] for c in CONDITIONS) + " |", "|---|---|---|---|"]
    for key, label in PHASES:
        lines.append(f"| {label} | " + " | ".join(f"{s[c][key]['median']:.2f}" for c in CONDITIONS) + " |")
    lines += ["", "Losses of the first step (must agree across conditions): " + ", ".join(
        f"{c} {sorted(set(result['losses'][c]))}" for c in CONDITIONS)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--data_dir", default="", help="ImageFolder tree (default: digits written once, 64 px)")
    parser.add_argument("--epoch_size", type=int, default=1)
    parser.add_argument("--num_samples", type=int, default=320, help="training images used (default 320)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repo", default="", help="run the mindcv_mobile package of this tree (default: this one)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "first_step_digits_cpu"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    user_home = os.environ.get("MINDCV_MOBILE_HOME") or os.path.expanduser("~/.cache/mindcv_mobile")
    if not args.data_dir:
        args.data_dir = os.path.join(user_home, "bench_digits_64")
        make = [sys.executable, os.path.join(ROOT, "scripts", "make_digits.py"), "--root", args.data_dir]
        subprocess.run(make + ["--image_size", "64"], check=True, capture_output=True)
    home = tempfile.mkdtemp(prefix="first_step_home-")
    if os.path.isdir(os.path.join(user_home, "kernels")):
        os.symlink(os.path.join(user_home, "kernels"), os.path.join(home, "kernels"))
    env_info = environment()
    env_info["command"] = "python benchmarks/first_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        run_once(args, "cold", home)  # untimed: kernels, dataset index and file caches warm up
        rows = []
        for r in range(args.rounds):
            order = ("off", "cold", "warm") if r % 2 == 0 else ("cold", "warm", "off")
            for condition in order:
                rows.append(dict(run_once(args, condition, home), round=r))
                row = rows[-1]
                print(f"round {r + 1}/{args.rounds} {condition}: first step {row['first_step_s']:.2f} s, "
                      f"to first step {row['to_first_step_s']:.2f} s ({row['cache']})", file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    keys = [k for k, _ in PHASES] + ["first_step_s", "to_first_step_s", "process_s", "second_step_s"]
    by = {c: [row for row in rows if row["condition"] == c] for c in CONDITIONS}
    result = {
        "environment": env_info,
        "loadavg_end": environment()["loadavg_start"],
        "recipe": os.path.abspath(args.recipe),
        "epoch_size": args.epoch_size,
        "num_samples": args.num_samples,
        "rounds": args.rounds,
        "package": rows[0]["package"],
        "summary": {c: {k: summarize([row[k] for row in by[c]]) for k in keys} for c in CONDITIONS},
        "notes": {c: by[c][-1]["cache"] for c in CONDITIONS},
        "losses": {c: [row["loss"] for row in by[c]] for c in CONDITIONS},
        "runs": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
