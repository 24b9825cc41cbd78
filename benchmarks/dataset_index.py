"""How long an ImageFolder split takes to be ready: the cold scan, the index build, the warm load.

    python benchmarks/dataset_index.py --repos before=/copy/of/older/tree,after=. --repeats 3

Trees (written once into the cache folder, ``$MINDCV_MOBILE_HOME/dataset_index``):

* ``jpegs_100000``: 100,000 small real JPEGs (40-128 px) in 200 classes, encoded by Pillow:
  85 % baseline with the standard Huffman tables at qualities 70-95, 10 % with optimized
  (per-file) Huffman tables, 5 % progressive; plus 90 broken files (truncated, a corrupt
  Huffman table, HTML saved as .jpg, empty) that every scan must skip and name.
* ``links_1281167``: ImageNet's train split shape, 1,281,167 files in 1,000 classes with
  ImageNet-style names (``n01440764/n01440764_10026.JPEG``), each a hard link to a file of the
  100,000 tree: real files on disk at the cost of directory entries only. Its index is built once
  by the real scan; what is measured on it is the warm load of that index in a fresh process.

Every measurement runs in a fresh interpreter with ``PYTHONPATH`` set to the repository under
test, so older trees (``--repos``) are measured by their own code. Rounds go through the repos
in turn (before, after, before, after, ...) so that a busy spell of the shared machine does not
land on one of them; tables give min-max over the rounds. Files are in the page cache (the
trees were just written or scanned): the scan is bound by system calls and Python, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGENET_TRAIN = (1000, 1_281_167)


def cache_folder() -> str:
    home = os.environ.get("MINDCV_MOBILE_HOME") or os.path.expanduser("~/.cache/mindcv_mobile")
    return os.path.join(home, "dataset_index")


# --------------------------------------------------------------------------- trees
def _broken_files(jpeg: bytes) -> dict:
    bad_huffman = bytearray(jpeg)
    dht = jpeg.index(b"\xff\xc4")
    bad_huffman[dht + 5 : dht + 21] = b"\xff" * 16
    return {
        "truncated": jpeg[: len(jpeg) // 2],
        "bad_huffman": bytes(bad_huffman),
        "html": b"<html>404 not found</html>",
        "empty": b"",
    }


def write_small_jpegs(root: str, images: int = 100_000, classes: int = 200, seed: int = 0) -> str:
    """The 100,000-JPEG tree (see the module docstring) under ``root/train``; written once."""
    import io

    import numpy as np
    from PIL import Image

    marker = os.path.join(root, f".complete-{images}-{classes}")
    if os.path.isfile(marker):
        return root
    rng = np.random.default_rng(seed)
    split = os.path.join(root, "train")
    for c in range(classes):
        os.makedirs(os.path.join(split, f"class_{c:03d}"), exist_ok=True)
    for i in range(images):
        w = int(rng.integers(40, 129))
        h = int(rng.integers(30, 97))
        coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        noise = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        img = Image.fromarray((np.asarray(coarse, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8))
        kind = rng.random()
        options = {"quality": int(rng.integers(70, 96))}
        if kind >= 0.95:
            options["progressive"] = True
        elif kind >= 0.85:
            options["optimize"] = True
        buf = io.BytesIO()
        img.save(buf, "JPEG", **options)
        with open(os.path.join(split, f"class_{i % classes:03d}", f"img_{i:06d}.jpg"), "wb") as f:
            f.write(buf.getvalue())
        if i < 90:  # broken files, spread over the first classes
            name, data = list(_broken_files(buf.getvalue()).items())[i % 4]
            with open(os.path.join(split, f"class_{i % classes:03d}", f"bad_{name}_{i}.jpg"), "wb") as f:
                f.write(data)
    open(marker, "w").close()
    return root


def write_linked_tree(root: str, source_split: str, classes: int, files: int) -> str:
    """``files`` hard links in ``classes`` ImageNet-named folders to the JPEGs of ``source_split``."""
    marker = os.path.join(root, f".complete-{classes}-{files}")
    if os.path.isfile(marker):
        return root
    sources = sorted(
        os.path.join(d.path, f.name)
        for d in os.scandir(source_split)
        if d.is_dir()
        for f in os.scandir(d.path)
        if f.name.startswith("img_")
    )
    split = os.path.join(root, "train")
    per_class, extra = divmod(files, classes)
    k = 0
    for c in range(classes):
        wnid = f"n{1440764 + 7919 * c:08d}"
        folder = os.path.join(split, wnid)
        os.makedirs(folder, exist_ok=True)
        for j in range(per_class + (c < extra)):
            target = os.path.join(folder, f"{wnid}_{10026 + 13 * j}.JPEG")
            if not os.path.exists(target):
                os.link(sources[k % len(sources)], target)
            k += 1
    open(marker, "w").close()
    return root


# --------------------------------------------------------------------------- one measurement
def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def child(mode: str, root: str) -> dict:
    """One measurement in this (fresh) process; ``mode``: cold (``scan_image_folder``: list and
    probe, nothing stored), build (scan and write the index) or warm (``load_index`` of a stored
    index, as every later process of a run)."""
    import logging
    import resource

    logging.basicConfig(level=logging.ERROR)
    import mindcv_mobile  # noqa: F401
    from mindcv_mobile.data import image_folder

    before, cpu, start = _rss_mb(), time.process_time(), time.perf_counter()
    if mode == "cold":
        index = image_folder.scan_image_folder(root, "train")
        files, extra = len(index) + len(index.skipped), {}
    elif mode == "build":
        from mindcv_mobile.data.index import build_index

        scan, path = build_index(os.path.join(root, "train"), rebuild=True)
        files, extra = len(scan.folder) + len(scan.skipped), {"index_mb": os.path.getsize(path) / 2**20}
    else:
        index = image_folder.load_index(root, "train")
        assert index.origin != "scan", "no stored index to load"
        arrays = [index.paths.starts, index.labels, index.folder, index.reencode]
        files = len(index) + len(index.skipped)
        extra = {"index_arrays_mb": (len(index.paths.blob) + sum(a.nbytes for a in arrays)) / 2**20}
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "mode": mode,
        "files": files,
        "seconds": seconds,
        "files_per_s": files / seconds,
        "cpu_s": time.process_time() - cpu + children.ru_utime + children.ru_stime,
        "rss_delta_mb": _rss_mb() - before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def run(repo: str, mode: str, root: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(repo))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, root],
        env=env,
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {root} with {repo} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def _span(rows: list, key: str, digits: int = 1) -> str:
    values = [r[key] for r in rows]
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}" if len(values) > 1 else f"{values[0]:,.{digits}f}"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# ImageFolder split: cold scan, index build, warm load",
        "",
        f"{env['date']}, {env['cpu']}, {env['cores']} cores, Python {env['python']}, load average "
        f"{env['loadavg_start']} -> {env['loadavg_end']}. Command: `{env['command']}`. Values: min-max over "
        f"the rounds (each in a fresh process; repos interleaved).",
        "",
        "Trees: `100k JPEGs` = 100,000 Pillow JPEGs of 40-128 px in 200 classes (85 % baseline, 10 % optimized "
        "Huffman tables, 5 % progressive) plus 90 broken files every scan skips; `1.28M links` = ImageNet's train "
        "shape, 1,281,167 ImageNet-named hard links to those JPEGs in 1,000 classes (real files on disk). "
        "cold: `scan_image_folder` (list and probe, nothing stored); build: the same scan plus writing the index "
        "file; warm: `load_index` of the stored index, what every later process of a run does. CPU s: this "
        "process and its scanning processes. RSS growth: resident memory after minus before the call (after "
        "`import mindspore`); index MB: the file (build) or its arrays in memory (warm).",
        "",
        "| tree | code | measurement | runs | files | seconds | files/s | CPU s | RSS growth MB | index MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["table"]:
        rows = row["runs"]
        size = row["runs"][0].get("index_mb") or row["runs"][0].get("index_arrays_mb")
        lines.append(
            f"| {row['tree']} | {row['label']} | {row['mode']} | {len(rows)} | {rows[0]['files']:,} | "
            f"{_span(rows, 'seconds', 2)} | {_span(rows, 'files_per_s', 0)} | {_span(rows, 'cpu_s', 2)} | "
            f"{_span(rows, 'rss_delta_mb')} | {'-' if size is None else f'{size:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", default=f"after={ROOT}", help="label=path,... of the trees to measure")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the repos (default 3)")
    parser.add_argument("--big-repeats", type=int, default=1, help="rounds of the older repos' scan of the 1.28M tree")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "dataset_index"), help="<out>.json, <out>.md")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    import datetime
    import platform

    repos = dict(item.split("=", 1) for item in args.repos.split(","))
    newest = list(repos)[-1]
    small = write_small_jpegs(os.path.join(cache_folder(), "jpegs_100000"))
    big = write_linked_tree(
        os.path.join(cache_folder(), f"links_{IMAGENET_TRAIN[1]}"), os.path.join(small, "train"), *IMAGENET_TRAIN
    )
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "command": "python benchmarks/dataset_index.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    runs: dict = {}

    def record(tree: str, label: str, mode: str, root: str) -> None:
        result = run(repos[label], mode, root)
        runs.setdefault((tree, label, mode), []).append(result)
        print(f"{tree} {label} {mode}: {result['seconds']:.2f} s, {result['files_per_s']:,.0f} files/s", flush=True)

    if not os.path.exists(os.path.join(big, ".mindcv_mobile_index-train.npz")):
        run(repos[newest], "build", big)  # the warm loads need one
    for r in range(args.repeats):
        for label in repos:
            record("100k JPEGs", label, "cold", small)
        record("100k JPEGs", newest, "build", small)
        record("100k JPEGs", newest, "warm", small)
        record("1.28M links", newest, "warm", big)
        if r < args.big_repeats:
            for label in list(repos)[:-1]:
                record("1.28M links", label, "cold", big)
            record("1.28M links", newest, "build", big)
    env["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    table = [{"tree": t, "label": label, "mode": m, "runs": rows} for (t, label, m), rows in runs.items()]
    report = {"environment": env, "repos": repos, "table": table}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
