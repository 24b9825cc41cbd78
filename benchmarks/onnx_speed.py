"""Inference speed of exported ONNX MobileNets in onnxruntime (CPU) against timm's models in
PyTorch, measured in interleaved rounds.

    python benchmarks/onnx_speed.py --out benchmarks/results/onnx_speed

For every model, random weights (1000 classes) are exported twice in a subprocess that imports
this package: "before", MindSpore's ONNX graph as export wrote it until now (opset 11, every
BatchNorm its own node, hard-swish as Add/Clip/Mul/Div; ``write_cell(..., optimize=False)``), and
"after", the file ``export_model`` writes now (``writer.optimize_onnx``), checked by the export
against the Cell. Then, for each model, four runners are timed, each in its own process (which
does not import this package: its oneDNN ISA cap would change PyTorch's kernels; timm is measured
as its users run it), driven in interleaved rounds over a pipe:

  onnx_before, onnx_after  onnxruntime sessions with the options of ``deploy.onnx_session``
                           (read back from a session the export subprocess opened), with
                           ``--threads`` intra-op threads;
  timm, timm_cl            timm's model in eval mode under ``torch.inference_mode``, fp32, NCHW
                           and channels_last, ``torch.set_num_threads(--threads)``, after 3
                           training steps (as in bench.py: it then infers faster).

One process per runner, and the runners not being timed are stopped (SIGSTOP): both frameworks
keep their idle threads spinning after a call, and onnxruntime's spinning threads, in the same
process or in a waiting one, took the cores from PyTorch's (timm channels_last ran at half the
speed it has alone). A segment's "others' share" counts every other process. ``--policies`` can
add "sleep", idle threads sleeping in both (onnxruntime ``session.intra_op.allow_spinning`` 0,
``OMP_WAIT_POLICY=PASSIVE`` for PyTorch's OpenMP), which is what a machine shared with other work
needs; "default" is as both ship.

A round runs every runner once (its order rotating from round to round): one untimed call, then
``--iters`` timed calls (more when the fastest runner would take under ``--min-segment-s``).
Reported: img/s median (min-max) over ``--rounds`` rounds, and the ratio of two runners taken
within each round (median, min-max): on a shared machine, the load a round sees is common to its
runners. Every timed segment also records the share of the machine other processes used
(/proc/stat minus the timed runner's CPU time), and the same figures are given over the quiet rounds
alone (every runner at most ``--quiet``). Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import os

BASE_ENV = dict(os.environ)  # before anything could import mindcv_mobile

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("mobilenet_v3_small_100", "mobilenet_v3_large_100", "mobilenet_v2_100", "mobilenet_v1_100")
RUNNERS = ("onnx_before", "onnx_after", "timm", "timm_cl")
RATIOS = (("onnx_after", "timm_cl"), ("onnx_after", "timm"), ("onnx_after", "onnx_before"), ("onnx_before", "timm_cl"))
POLICIES = {
    "default": "idle threads spin as both frameworks ship",
    "sleep": "idle threads sleep (onnxruntime allow_spinning 0, OMP_WAIT_POLICY=PASSIVE)",
}
SPIN_KEY = "session.intra_op.allow_spinning"
HEADER = " | ".join(
    [name.replace("_", " ") for name in RUNNERS]
    + [f"{a.replace('onnx_', '')} / {b.replace('onnx_', '')}" for a, b in RATIOS]
)


def _bench_module():
    """benchmarks/bench.py (timm's name for a model, timm's import without torchvision)."""
    spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "benchmarks", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def _stats(values: list) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (/proc/stat), or -1 where unknown."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return -1.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ export worker
def _config_entry(options, key: str):
    try:
        return options.get_session_config_entry(key) or None
    except Exception:  # onnxruntime raises when the entry was never set
        return None


def export_worker(model: str, folder: str, image_size: int) -> dict:
    import collections

    import mindspore as ms
    import numpy as np
    import onnx

    from mindcv_mobile.config import load_config
    from mindcv_mobile.deploy import onnx_session
    from mindcv_mobile.deploy.writer import write_cell
    from mindcv_mobile.models import create_model, save_checkpoint
    from mindcv_mobile.tasks.export import export

    ckpt = os.path.join(folder, f"{model}.ckpt")
    save_checkpoint(create_model(model, num_classes=1000), ckpt)
    cfg = load_config(None, {"model": model, "num_classes": 1000, "ckpt_path": ckpt, "image_resize": image_size})
    files = {"onnx_after": os.path.join(folder, f"{model}_after.onnx")}
    start = time.perf_counter()
    result = export(cfg, "ONNX", files["onnx_after"], batch_size=1)
    after_s = time.perf_counter() - start
    net = create_model(model, num_classes=1000)  # a fresh Cell: one Cell exports to ONNX once
    ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    net.set_train(False)
    files["onnx_before"] = os.path.join(folder, f"{model}_before.onnx")
    start = time.perf_counter()
    x = ms.Tensor(np.zeros((1, 3, image_size, image_size), np.float32))
    write_cell(net, x, "ONNX", files["onnx_before"], optimize=False)
    before_s = time.perf_counter() - start
    options = onnx_session(files["onnx_after"]).get_session_options()
    graphs = {}
    for name, path in files.items():
        graph = onnx.load(path)
        graphs[name] = {
            "path": path,
            "opset": graph.opset_import[0].version,
            "bytes": os.path.getsize(path),
            "op_types": dict(collections.Counter(node.op_type for node in graph.graph.node)),
        }
    return {
        "files": graphs,
        "export_s": {"onnx_before": before_s, "onnx_after (with its check)": after_s},
        "check": {
            "compared_with": result.compared_with,
            "max_abs_diff": result.max_abs_diff,
            "tolerance": result.tolerance,
            "max_abs_logit": result.max_abs_logit,
        },
        "session_options": {
            "graph_optimization_level": str(options.graph_optimization_level),
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "execution_mode": str(options.execution_mode),
            SPIN_KEY: _config_entry(options, SPIN_KEY),
        },
    }


# ------------------------------------------------------------------------------ timing worker
def _onnx_runner(path: str, session_options: dict, threads: int, policy: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    spinning = "0" if policy == "sleep" else session_options.get(SPIN_KEY)
    if spinning is not None:
        options.add_session_config_entry(SPIN_KEY, spinning)
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, session_options["graph_optimization_level"].split(".")[-1]
    )
    options.execution_mode = getattr(ort.ExecutionMode, session_options["execution_mode"].split(".")[-1])
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = session_options["inter_op_num_threads"]
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), load_s


class Runner:
    """One runner in its own process (``--worker runner``), driven over a pipe and stopped while
    another runner is timed (module docstring: spinning idle threads)."""

    def __init__(self, name: str, argv: list, env: dict, cwd: str) -> None:
        self.name = name
        script = os.path.abspath(__file__)
        command = [sys.executable, script, *argv, "--worker", "runner", "--runner", name]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} runner exited with code {self.proc.wait()}")
        return json.loads(line)

    def hold(self, stopped: bool) -> None:
        """Stop (SIGSTOP) or continue the process: a stopped runner's idle threads cannot spin."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP if stopped else signal.SIGCONT)

    def request(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.hold(False)
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _alone(runners: dict, name: str):
    """``runners[name]``, every other runner stopped."""
    for other, runner in runners.items():
        runner.hold(other != name)
    return runners[name]


def _time_batch(runners: dict, batch: int, args) -> dict:
    """Interleaved rounds of every runner at ``batch``: img/s, per-round ratios, others' share."""
    per_call = {}
    for name in runners:
        reply = _alone(runners, name).request(cmd="run", batch=batch, untimed=0, calls=max(1, args.warmup))
        per_call[name] = reply["wall_s"] / max(1, args.warmup)
    # calls per timed segment: --iters, or more so that each lasts --min-segment-s
    iters = max(args.iters, math.ceil(args.min_segment_s / max(min(per_call.values()), 1e-6)))
    speeds = {name: [] for name in runners}
    others = {name: [] for name in runners}  # the share of the machine other processes used
    for round_index in range(args.rounds):
        order = list(runners)[round_index % len(runners) :] + list(runners)[: round_index % len(runners)]
        for name in order:
            # one untimed call first: the previous runner's threads settle
            runner = _alone(runners, name)
            busy, start = _machine_busy_s(), time.perf_counter()
            reply = runner.request(cmd="run", batch=batch, untimed=1, calls=iters)
            span, busy = time.perf_counter() - start, _machine_busy_s() - busy
            speeds[name].append(batch * iters / reply["wall_s"])
            # everything but the timed runner counts, the waiting runners included; /proc/stat
            # counts in clock ticks (10 ms): a short segment's share is coarse
            share = min(1.0, max(0.0, busy - reply["cpu_s"]) / (span * os.cpu_count()))
            others[name].append(share if busy >= 0 else None)
    quiet = [all(o[i] is not None and o[i] <= args.quiet for o in others.values()) for i in range(args.rounds)]

    def ratios(keep) -> dict:
        return {f"{a}/{b}": _stats([sa / sb for sa, sb, k in zip(speeds[a], speeds[b], keep) if k]) for a, b in RATIOS}

    return {
        "calls_per_segment": iters,
        "img_per_s": {name: _stats(values) for name, values in speeds.items()},
        "ratios": ratios([True] * args.rounds),
        "other_processes_share": _stats([v for values in others.values() for v in values if v is not None]),
        "quiet_rounds": sum(quiet),
        "quiet_img_per_s": {name: _stats([v for v, q in zip(values, quiet) if q]) for name, values in speeds.items()},
        "quiet_ratios": ratios(quiet),
        "rounds_img_per_s": speeds,
        "rounds_other_processes_share": others,
    }


def runner_worker(args, exported: dict) -> None:
    """Serve ``args.runner``'s calls: JSON requests on stdin, one JSON reply per line on stdout
    (a private copy of it: anything else printed goes to stderr)."""
    import numpy as np

    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    versions = {"onnxruntime": _version("onnxruntime")}
    if args.runner.startswith("onnx"):
        run, load_s = _onnx_runner(
            exported["files"][args.runner]["path"], exported["session_options"], args.threads, args.policy
        )
    else:
        import torch

        bench = _bench_module()
        timm = bench._import_timm()
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        fmt = torch.channels_last if args.runner == "timm_cl" else torch.contiguous_format
        start = time.perf_counter()
        net = timm.create_model(bench.timm_name(args.model), num_classes=1000).to(memory_format=fmt)
        load_s = time.perf_counter() - start
        # A few training steps first, as bench.py's timm worker runs before its inference rounds:
        # measured, a PyTorch process that has trained infers faster (v3-small channels_last,
        # batch 32: 1090 vs 700 img/s), so timm is timed at the better of the two.
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(args.batch_sizes[0], 3, args.image_size, args.image_size).contiguous(memory_format=fmt)
        y = torch.randint(0, 1000, (args.batch_sizes[0],))
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
        net.eval()

        converted = {}  # the input in the model's memory format, made once per batch outside the timing

        def run(x):
            if id(x) not in converted:
                converted[id(x)] = torch.from_numpy(x).contiguous(memory_format=fmt)
            with torch.inference_mode():
                return net(converted[id(x)]).numpy()

        versions.update(torch=torch.__version__, timm=timm.__version__)

    def reply(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    reply({"load_s": load_s, "versions": versions, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")})
    inputs = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        batch = request["batch"]
        if batch not in inputs:
            shape = (batch, 3, args.image_size, args.image_size)
            inputs[batch] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        x = inputs[batch]
        cpu = time.process_time()
        for _ in range(request["untimed"]):
            run(x)
        start = time.perf_counter()
        for _ in range(request["calls"]):
            run(x)
        reply({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu})


def time_model(model: str, exported_path: str, policy: str, args, timing_args: list, work: str) -> dict:
    """Every runner of ``model`` in its own process under ``policy``, every batch size timed."""
    env = dict(BASE_ENV, OMP_WAIT_POLICY="PASSIVE") if policy == "sleep" else dict(BASE_ENV)
    argv = ["--model", model, "--exported", exported_path, "--policy", policy] + timing_args
    runners = {}
    try:
        for name in RUNNERS:
            runners[name] = Runner(name, argv, env, work)
        out = {"session_load_s": {name: r.info["load_s"] for name, r in runners.items()}, "batches": {}}
        for batch in args.batch_sizes:
            out["batches"][str(batch)] = _time_batch(runners, batch, args)
    finally:
        for runner in runners.values():
            runner.close()
    out["omp_wait_policy"] = runners["timm"].info["omp_wait_policy"]
    out["versions"] = {k: v for r in runners.values() for k, v in r.info["versions"].items()}
    return out


def _version(name: str):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------ driver
def _subprocess(argv: list, env: dict, cwd: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    try:
        # cwd: where MindSpore leaves its dumps (rank_0/...) when a compile fails
        script = os.path.abspath(__file__)
        proc = subprocess.run([sys.executable, script] + argv + ["--result", result_path], env=env, cwd=cwd)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} failed with exit code {proc.returncode}")
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    finally:
        os.remove(result_path)


def _fmt(stats: dict, digits: int = 1) -> str:
    if not stats.get("n", 1):
        return "-"
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def _table(rows: dict, speed_key: str, ratio_key: str, first: str) -> list:
    lines = [f"| model | {first} | " + HEADER + " |", "|---|---|" + "---|" * (len(RUNNERS) + len(RATIOS))]
    for model, row in rows.items():
        lead = str(row["quiet_rounds"]) if first == "quiet rounds" else _fmt(row["other_processes_share"], 2)
        speeds = [_fmt(row[speed_key][name]) for name in RUNNERS]
        ratios = [_fmt(row[ratio_key][f"{a}/{b}"], 2) for a, b in RATIOS]
        lines.append(f"| {model} | {lead} | " + " | ".join(speeds + ratios) + " |")
    return lines + [""]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# ONNX (onnxruntime CPU) vs timm inference speed, {report['image_size']} px",
        "",
        f"Command: `{env['command']}`",
        "",
        f"{env['date']}: {env['cpu']}, {env['cores']} cores, {report['threads']} threads for both frameworks; "
        f"onnxruntime {env.get('onnxruntime')}, torch {env.get('torch')}, timm {env.get('timm')}; load average "
        f"{env['loadavg_start']} at start, {env['loadavg_end']} at end. {report['rounds']} interleaved rounds of "
        f"at least {report['iters']} calls per runner (more if the fastest would take under "
        f"{report['min_segment_s']} s) after {report['warmup']} warm-up calls; img/s median (min-max) "
        f"over rounds; ratios per round, median (min-max); others' share: the part of the machine other "
        f"processes used while a runner was timed.",
        "",
    ]
    quiet = f"other processes used at most {report['quiet']:.0%} of the machine during every runner"
    for policy in report["policies"]:
        for batch in report["batch_sizes"]:
            rows = {model: r["timing"][policy]["batches"][str(batch)] for model, r in report["results"].items()}
            lines += [f"## batch {batch}, {policy}: {POLICIES[policy]}", ""]
            lines += _table(rows, "img_per_s", "ratios", "others' share")
            if any(row["quiet_rounds"] for row in rows.values()):
                lines += [f"Quiet rounds only ({quiet}):", ""]
                lines += _table(rows, "quiet_img_per_s", "quiet_ratios", "quiet rounds")
            else:
                lines += [f"No quiet round ({quiet}).", ""]
    lines += [
        "## exported graphs",
        "",
        "| model | before: opset, nodes | after: opset, nodes | after vs Cell: max abs diff "
        "(tolerance, max abs logit) |",
        "|---|---|---|---|",
    ]
    for model, result in report["results"].items():
        files, check = result["export"]["files"], result["export"]["check"]
        cells = [
            f"{files[name]['opset']}, "
            + ", ".join(f"{op} {n}" for op, n in sorted(files[name]["op_types"].items(), key=lambda kv: -kv[1]))
            for name in ("onnx_before", "onnx_after")
        ]
        lines.append(
            f"| {model} | {cells[0]} | {cells[1]} | {check['max_abs_diff']:.3g} "
            f"({check['tolerance']:.3g}, {check['max_abs_logit']:.3g}) |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default="32,1")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--iters", type=int, default=10, help="timed calls per runner and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--min-segment-s", type=float, default=1.0, help="more calls than --iters when a segment would be shorter"
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.1,
        help="a round is quiet when other processes used at most this share of the machine during each runner",
    )
    parser.add_argument(
        "--policies", default="default", help=f"thread waiting policies to time, from {', '.join(POLICIES)}"
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "onnx_speed"))
    parser.add_argument("--work", default=None, help="folder for the exported files (default: a temporary one)")
    parser.add_argument("--worker", choices=("export", "runner"), help=argparse.SUPPRESS)
    parser.add_argument("--runner", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=tuple(POLICIES), default="default", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--exported", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    unknown = [p for p in args.policies.split(",") if p not in POLICIES]
    if unknown:
        parser.error(f"--policies {args.policies}: {unknown} not among {', '.join(POLICIES)}")
    if args.iters < 1 or args.rounds < 1:
        parser.error(f"--iters and --rounds must be positive, got {args.iters} and {args.rounds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.worker == "runner":
            with open(args.exported, encoding="utf-8") as f:
                runner_worker(args, json.load(f))
            return 0
        result = export_worker(args.model, args.work, args.image_size)
        with open(args.result, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return 0
    environment = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": _loadavg(),
        "command": "python benchmarks/onnx_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    common = ["--image-size", str(args.image_size)]
    timing_args = common + [
        "--threads", str(args.threads), "--rounds", str(args.rounds), "--iters", str(args.iters),
        "--warmup", str(args.warmup), "--min-segment-s", str(args.min_segment_s), "--quiet", str(args.quiet),
        "--batch-sizes", ",".join(map(str, args.batch_sizes)),
    ]  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.abspath(args.work or tmp)
        os.makedirs(work, exist_ok=True)
        exported_paths = {}
        for model in args.models.split(","):  # every export first: then the timing needs no package code
            export_argv = ["--worker", "export", "--model", model, "--work", work] + common
            exported = _subprocess(export_argv, dict(BASE_ENV), work)
            after_ops = exported["files"]["onnx_after"]["op_types"]
            if after_ops.get("BatchNormalization") or after_ops.get("Div"):
                raise RuntimeError(f"{model}: the exported file was not rewritten for inference: {after_ops}")
            exported_paths[model] = os.path.join(work, f"{model}_export.json")
            with open(exported_paths[model], "w", encoding="utf-8") as f:
                json.dump(exported, f)
            results[model] = {"export": exported, "timing": {}}
        for model, exported_path in exported_paths.items():
            for policy in args.policies.split(","):
                timing = results[model]["timing"][policy] = time_model(
                    model, exported_path, policy, args, timing_args, work
                )
                for batch in args.batch_sizes:
                    row = timing["batches"][str(batch)]
                    print(
                        f"{model} b{batch} {policy}: "
                        + ", ".join(f"{name} {_fmt(row['img_per_s'][name])}" for name in RUNNERS)
                        + f"; after/timm_cl {_fmt(row['ratios']['onnx_after/timm_cl'], 2)}",
                        flush=True,
                    )
    environment["loadavg_end"] = _loadavg()
    for result in results.values():
        environment.update(next(iter(result["timing"].values()))["versions"])
    report = {
        "environment": environment,
        "image_size": args.image_size,
        "batch_sizes": args.batch_sizes,
        "threads": args.threads,
        "rounds": args.rounds,
        "iters": args.iters,
        "warmup": args.warmup,
        "min_segment_s": args.min_segment_s,
        "quiet": args.quiet,
        "policies": args.policies.split(","),
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(report))
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
