"""Peak memory of ``infer.py`` against the number of images it classifies.

    python benchmarks/infer_memory.py --label after                 # 500 and 5,000 JPEGs, .ckpt and .onnx
    python benchmarks/infer_memory.py --label before --repo /copy/of/older/tree --repeats 2

Synthetic 500x375 JPEGs (ImageNet's average size, ``bench.write_jpeg_tree``) are written once per
folder size into the cache folder, next to a mobilenet_v3_small_100 with random weights (1,000
classes) as a checkpoint and, with ``--formats`` holding onnx, its exported ``.onnx``. Each run is
``python <repo>/infer.py --ckpt_path MODEL FOLDER --output predictions.csv`` in a fresh process;
runs go round by round through the folder sizes (500, 5000, 500, 5000, ...) so that a slow spell
of the shared machine does not land on one size only.

Memory: the resident set of the process and all its children summed, polled every
``--interval`` seconds with psutil (the tree's peak), and ``ru_maxrss`` from ``wait4`` (the peak
of the largest single process, exact). Each run's predictions file is hashed: runs of one model
on one folder must agree, and so must two labels (an older tree and a newer one) when their
outputs are meant to be identical. Results are merged by label into ``<out>.json`` and the
tables of every label rewritten to ``<out>.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench import environment, write_jpeg_tree  # noqa: E402

MODEL = "mobilenet_v3_small_100"
NUM_CLASSES = 1000


def cache_folder() -> str:
    home = os.environ.get("MINDCV_MOBILE_HOME") or os.path.expanduser("~/.cache/mindcv_mobile")
    return os.path.join(home, "infer_memory")


def image_folder(cache: str, images: int) -> str:
    """``images`` JPEGs under ``<cache>/jpegs_<images>/train/<class>/``, written once."""
    return os.path.join(write_jpeg_tree(os.path.join(cache, f"jpegs_{images}"), images), "train")


def model_files(cache: str, formats: list) -> dict:
    """{format: path}: the random-weight checkpoint and the exports asked for, made once."""
    os.makedirs(cache, exist_ok=True)
    ckpt = os.path.join(cache, f"{MODEL}_random.ckpt")
    files = {"ckpt": ckpt}
    onnx = os.path.join(cache, f"{MODEL}_random.onnx")
    if "onnx" in formats:
        files["onnx"] = onnx
    missing = not os.path.isfile(ckpt) or ("onnx" in formats and not os.path.isfile(onnx))
    if missing:
        # In a child process: this one stays free of MindSpore while it measures.
        code = (
            "import sys, mindcv_mobile, mindspore as ms\n"
            "from mindcv_mobile.models import create_model, save_checkpoint\n"
            "from mindcv_mobile.config import defaults\n"
            "from mindcv_mobile.tasks.export import export\n"
            f"ms.set_seed(0)\nckpt, onnx = sys.argv[1], sys.argv[2]\n"
            f"save_checkpoint(create_model({MODEL!r}, num_classes={NUM_CLASSES}), ckpt)\n"
            "if onnx:\n"
            f"    cfg = defaults(); cfg.update(model={MODEL!r}, num_classes={NUM_CLASSES}, ckpt_path=ckpt)\n"
            "    export(cfg, 'ONNX', onnx)\n"
        )
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-c", code, ckpt, files.get("onnx", "")], check=True, env=env, cwd=cache)
    return files


def measure(cmd: list, env: dict, cwd: str, interval: float) -> dict:
    """Run ``cmd``: (peak summed RSS of its process tree, ru_maxrss of its largest process, seconds)."""
    import psutil

    start = time.perf_counter()
    log_path = os.path.join(cwd, "infer.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
    root = psutil.Process(proc.pid)
    peak = 0
    while True:
        # The polled process is a zombie once it exits: wait4 below reaps it.
        try:
            if root.status() == psutil.STATUS_ZOMBIE:
                break
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, rss)
        time.sleep(interval)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = open(log_path, errors="replace").read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return {"tree_peak_mb": peak / 2**20, "max_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}


def infer_command(repo: str, model: str, fmt: str, folder: str, output: str) -> list:
    cmd = [sys.executable, os.path.join(repo, "infer.py"), "--ckpt_path", model]
    if fmt == "ckpt":
        cmd += ["--model", MODEL, "--num_classes", str(NUM_CLASSES)]
    return cmd + [folder, "--output", output]


def span(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_label(args) -> dict:
    cache = args.cache or cache_folder()
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    folders = {n: image_folder(cache, n) for n in sizes}
    models = model_files(cache, formats)
    repo = os.path.abspath(args.repo)
    env = dict(os.environ, PYTHONPATH=repo)
    work = os.path.join(cache, f"work_{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    runs = {fmt: {str(n): [] for n in sizes} for fmt in formats}
    env_info = environment()  # before the runs: the load average the machine started with
    for round_ in range(args.repeats):
        for fmt in formats:
            for n in sizes:
                output = os.path.join(work, "predictions.csv")
                cmd = infer_command(repo, models[fmt], fmt, folders[n], output)
                r = measure(cmd, env, work, args.interval)
                with open(output, "rb") as f:
                    r["csv_sha256"] = hashlib.sha256(f.read()).hexdigest()
                r["img_per_s"] = n / r["seconds"]
                runs[fmt][str(n)].append(r)
                print(
                    f"round {round_ + 1} {fmt} {n:>6} images: tree peak {r['tree_peak_mb']:7.0f} MB, "
                    f"largest process {r['max_rss_mb']:7.0f} MB, {r['seconds']:6.1f} s",
                    flush=True,
                )
    shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for fmt in formats:
        summary[fmt] = {}
        for n in sizes:
            rs = runs[fmt][str(n)]
            hashes = sorted({r["csv_sha256"] for r in rs})
            summary[fmt][str(n)] = {
                "runs": len(rs),
                "tree_peak_mb": span([r["tree_peak_mb"] for r in rs]),
                "max_rss_mb": span([r["max_rss_mb"] for r in rs]),
                "seconds": span([r["seconds"] for r in rs]),
                "img_per_s": span([r["img_per_s"] for r in rs]),
                "csv_sha256": hashes[0] if len(hashes) == 1 else hashes,
            }
        small, large = summary[fmt][str(min(sizes))], summary[fmt][str(max(sizes))]
        # Worst case: the largest run's peak over the smallest's lowest.
        summary[fmt]["growth"] = {
            "median": large["tree_peak_mb"]["median"] / small["tree_peak_mb"]["median"],
            "worst": large["tree_peak_mb"]["max"] / small["tree_peak_mb"]["min"],
        }
    env_info["command"] = "python benchmarks/infer_memory.py " + shlex.join(sys.argv[1:])
    for key in ("torch", "timm", "mindcv", "user_isa_env"):
        env_info.pop(key, None)
    env_info["loadavg_end"] = [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    return {
        "environment": env_info,
        "repo": repo,
        "model": MODEL,
        "image_size": "500x375 JPEG, quality 90",
        "sizes": sizes,
        "interval_s": args.interval,
        "summary": summary,
        "runs": runs,
    }


def markdown(report: dict) -> str:
    lines = [
        "# infer.py peak memory against the number of images",
        "",
        f"{MODEL} with random weights ({NUM_CLASSES} classes), synthetic 500x375 JPEGs, "
        "`python infer.py --ckpt_path MODEL FOLDER --output predictions.csv` in a fresh process per run, "
        "folder sizes interleaved. Tree peak: summed RSS of the process and its children (psutil polling); "
        "largest process: `ru_maxrss`. Values: median (min-max) of the runs.",
    ]
    for label, result in report.items():
        e = result["environment"]
        lines += [
            "",
            f"## {label}",
            "",
            f"{e['date']}, {e['cpu']}, {e['cores']} cores, Python {e['python']}, MindSpore {e['mindspore']}, "
            f"load average {e['loadavg_start'] or 'not recorded'} -> {e['loadavg_end']}. Command: `{e['command']}`.",
            "",
            "| model file | images | runs | tree peak MB | largest process MB | seconds | img/s | predictions sha256 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for fmt, by_size in result["summary"].items():
            for n in result["sizes"]:
                s = by_size[str(n)]
                sha = s["csv_sha256"] if isinstance(s["csv_sha256"], str) else "differ: " + ", ".join(s["csv_sha256"])
                lines.append(
                    f"| .{fmt} | {n} | {s['runs']} | {_fmt(s['tree_peak_mb'])} | {_fmt(s['max_rss_mb'])} | "
                    f"{_fmt(s['seconds'], 1)} | {_fmt(s['img_per_s'], 1)} | {sha[:12]} |"
                )
        growth = ", ".join(
            f".{fmt} {g['growth']['median']:.2f}x (worst {g['growth']['worst']:.2f}x)"
            for fmt, g in result["summary"].items()
        )
        lines += ["", f"Tree peak, {max(result['sizes'])} images over {min(result['sizes'])}: {growth}."]
    return "\n".join(lines) + "\n"


def _fmt(stats: dict, digits: int = 0) -> str:
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--label", required=True, help="name of this measurement in the results (e.g. before, after)")
    p.add_argument("--repo", default=ROOT, help="source tree whose infer.py and package run (default: this one)")
    p.add_argument("--sizes", default="500,5000", help="images per folder, comma-separated")
    p.add_argument("--formats", default="ckpt,onnx", help="model files: ckpt and/or onnx")
    p.add_argument("--repeats", type=int, default=3, help="rounds over the folder sizes")
    p.add_argument("--interval", type=float, default=0.02, help="seconds between RSS polls")
    p.add_argument("--cache", default="", help="folder for the JPEGs and models (default: the toolkit's cache)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "infer_memory"), help="<out>.json and <out>.md")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run_label(args)
    report = {}
    if os.path.isfile(args.out + ".json"):
        with open(args.out + ".json", encoding="utf-8") as f:
            report = json.load(f)
    report[args.label] = result
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(report))
    print(markdown({args.label: result}))
    print(f"written {args.out}.json and {args.out}.md on {platform.node() or 'this machine'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
