"""Training and inference speed, compile time and memory of the MobileNets on this machine, measured
side by side with mindcv's models and (when importable) timm's, plus the real data pipeline.

    python benchmarks/bench.py --models mobilenet_v3_small_100,mobilenet_v2_100 --out benchmarks/results/cpu

Every (model, variant) is measured in its own subprocess, so the oneDNN ISA environment and the
peak RSS belong to that run alone. Variants:

  ours        this package as its entry points run it: ``import mindcv_mobile`` first (oneDNN ISA
              cap on AVX-512 CPUs, unless ONEDNN_MAX_CPU_ISA is set), ``init_runtime`` defaults
              (graph mode, threads = cores), the recipe's loss/optimizer/amp through
              ``create_loss``/``create_optimizer``/``TrainStep``.
  mindcv      mindcv 0.3.0's model as its users run it: no ISA setting (ONEDNN_MAX_CPU_ISA=ALL,
              oneDNN's "no cap" value, so importing this package cannot cap it), MindSpore's
              default threads; same TrainStep/loss/optimizer as ours.
  mindcv_isa  mindcv's model with the ISA rule of this package applied (the "ISA fix").
  timm        timm's model, PyTorch fp32 (NCHW); timm_cl: the same in channels_last.
  ours_noisa  (opt-in) our model with ONEDNN_MAX_CPU_ISA=ALL: what the cap alone is worth.
  ours_nokern (opt-in) our model with MindSpore's ops instead of the compiled CPU kernels
              (MINDCV_MOBILE_CPU_KERNELS=0): what the kernels alone are worth.
  paired      (with mindcv_isa) ours and mindcv's model in one process, training steps
              alternated: the ratio between them that machine load cannot skew.

Training = forward + backward + update on fixed synthetic tensors; inference = eval mode, batch
``--infer-batch`` throughput and batch-1 latency. "pipeline" measures the real ImageFolder
pipeline alone (JPEG decode + the recipe's train augmentation + batching on ``--workers``
workers); "e2e" runs ``mindcv_mobile.training.train`` (the entry point's code path) on it.
Timings: ``--warmup`` steps after the first (which includes graph compilation), then
``--repeats`` timed rounds of as many steps as fill ``--min-repeat-s``; median, min and max of
the rounds. Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import os

# Snapshot before anything imports mindcv_mobile (which may set ONEDNN_MAX_CPU_ISA in this
# process): every variant's environment is derived from what the user started us with.
BASE_ENV = dict(os.environ)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata, util  # noqa: E402
from typing import Callable, Optional  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ISA_NO_CAP = "ALL"  # oneDNN's default: every ISA the CPU has (checked with ONEDNN_VERBOSE)
DEFAULT_MODELS = ("mobilenet_v3_small_100", "mobilenet_v3_large_100", "mobilenet_v2_075", "mobilenet_v2_100")
VARIANTS = ("ours", "mindcv", "mindcv_isa", "timm", "timm_cl", "ours_noisa", "ours_nokern")
DEFAULT_VARIANTS = ("ours", "mindcv", "mindcv_isa", "timm", "timm_cl")
MINDSPORE_VARIANTS = ("ours", "ours_noisa", "ours_nokern", "mindcv", "mindcv_isa")


def find_recipe(model: str, configs: str = os.path.join(ROOT, "configs")) -> str:
    """The published recipe (``configs/<family>/*.yaml``) whose ``model`` is ``model``, else the one
    of the longest registered name ``model`` starts with (``mobilenet_v2_100_160`` ->
    ``mobilenet_v2_100``'s), else the family's (``mobilenet_v2``). ``*_ascend.yaml`` and shorter file
    names first: the ImageNet recipe as published."""
    import yaml

    by_model: dict = {}
    for family in sorted(os.listdir(configs)) if os.path.isdir(configs) else []:
        folder = os.path.join(configs, family)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder), key=lambda n: (not n.endswith("_ascend.yaml"), len(n), n)):
            if name.endswith((".yaml", ".yml")):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    recipe_model = (yaml.safe_load(f) or {}).get("model")
                if recipe_model and recipe_model not in by_model:
                    by_model[recipe_model] = os.path.join(folder, name)
    if model in by_model:
        return by_model[model]
    prefixes = sorted((m for m in by_model if model.startswith(m)), key=len, reverse=True)
    family = "_".join(model.split("_")[:2])  # mobilenet_v2
    prefixes += sorted(m for m in by_model if m.startswith(family))
    if not prefixes:
        raise ValueError(
            f"no recipe for model {model!r} under {configs} (recipes exist for {sorted(by_model)}); pass --recipe PATH"
        )
    return by_model[prefixes[0]]


def timm_name(model: str) -> str:
    """timm's name for one of ours: mobilenet_v3_small_100 -> mobilenetv3_small_100 (resolution
    suffixes such as _160 dropped: same network)."""
    parts = model.replace("mobilenet_v", "mobilenetv").split("_")
    if len(parts) > 2 and parts[-1].isdigit() and parts[-2].isdigit():
        parts = parts[:-1]
    return "_".join(parts)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def summarize(values: list, scale: float = 1.0) -> dict:
    """median/min/max of ``values`` times ``scale``."""
    return {"median": statistics.median(values) * scale, "min": min(values) * scale, "max": max(values) * scale}


def timed_rounds(
    run_once: Callable[[], None], warmup: int, repeats: int, min_repeat_s: float, max_steps: int = 50
) -> dict:
    """Time ``run_once`` (which must block until its result exists): first call, ``warmup`` more,
    then ``repeats`` rounds of n calls, n chosen from the warm-up so a round lasts ``min_repeat_s``.
    Returns seconds: first call, per-call median/min/max over rounds, n."""
    start = time.perf_counter()
    run_once()
    first = time.perf_counter() - start
    warm = []
    for _ in range(warmup):
        start = time.perf_counter()
        run_once()
        warm.append(time.perf_counter() - start)
    per_call = min(warm) if warm else first
    n = max(1, min(max_steps, math.ceil(min_repeat_s / max(per_call, 1e-6))))
    rounds, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(n):
            run_once()
        rounds.append((time.perf_counter() - start) / n)
        cpu.append((time.process_time() - cpu_start) / n)
    # CPU seconds (all threads) per call: less sensitive than wall time to other processes
    # sharing the cores, so ratios between runs on a busy machine stay readable.
    return {"first_s": first, "per_call_s": summarize(rounds), "cpu_s_per_call": summarize(cpu), "calls_per_round": n}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ------------------------------------------------------------------------------------ workers
def _throughput(rounds: dict, batch: int) -> dict:
    per, cpu = rounds["per_call_s"], rounds["cpu_s_per_call"]
    return {
        "ms_per_step": summarize([per["median"], per["min"], per["max"]], 1000.0),
        "img_per_s": {"median": batch / per["median"], "min": batch / per["max"], "max": batch / per["min"]},
        "cpu_ms_per_step": summarize([cpu["median"], cpu["min"], cpu["max"]], 1000.0),
    }


def bench_config(args, **overrides):
    """The model's recipe as the benchmark runs it: its loss, optimizer and precision at the
    benchmark's batch and image size, CPU graph mode, one process, random weights."""
    from mindcv_mobile.config import load_config

    values = dict(
        model=args.model,
        batch_size=args.batch_size,
        image_resize=args.image_size,
        num_classes=1000,
        device_target="CPU",
        mode=0,
        distribute=False,
        pretrained=False,
        ckpt_path="",
    )
    return load_config(args.recipe or find_recipe(args.model), {**values, **overrides})


def _worker_mindspore(args) -> dict:
    if args.variant.startswith("ours") or args.variant == "mindcv_isa":
        import mindcv_mobile  # noqa: F401  (first: the package's ISA rule, before MindSpore loads)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from mindcv_mobile import build, runtime

    # train.py's objects through its build step; the LR schedule spans the timed steps (no warmup).
    cfg = bench_config(args, epoch_size=1, warmup_epochs=0, decay_epochs=1)
    precision = build.build_precision(cfg, "CPU")
    if args.variant.startswith("ours"):
        rt = runtime.init_runtime(cfg)  # the entry points' defaults: device, mode, threads, seed
        # The compiled kernels as training uses them (off in ours_nokern: MINDCV_MOBILE_CPU_KERNELS=0).
        net = build.build_model(cfg, cpu_kernels=rt.cpu_kernels, amp_level=precision.amp_level)
        threads = runtime.CPU_SETTINGS.get("threads")
    else:
        import mindcv

        ms.set_device("CPU")
        ms.set_context(mode=ms.GRAPH_MODE)  # mindcv's train.py default (mode 0)
        ms.set_seed(cfg.seed)
        net = mindcv.models.create_model(cfg.model, num_classes=cfg.num_classes)
        if precision.amp_level != "O0":
            net = ms.amp.auto_mixed_precision(net, precision.amp_level)
        threads = None  # MindSpore's default
    params = sum(int(np.prod(p.shape)) for p in net.get_parameters())
    optimizer = build.build_optimizer(cfg, net, build.build_lr_schedule(cfg, steps_per_epoch=1000))
    train_step = build.build_train_step(cfg, net, optimizer, precision)
    train_step.set_train(True)
    rng = np.random.default_rng(0)
    size = args.image_size
    x = Tensor(rng.standard_normal((args.batch_size, 3, size, size), dtype=np.float32))
    y = Tensor(rng.integers(0, cfg.num_classes, args.batch_size).astype(np.int32))

    start = time.perf_counter()
    train_step.compile(x, y)
    compile_s = time.perf_counter() - start
    train = timed_rounds(lambda: train_step(x, y).asnumpy(), args.warmup, args.repeats, args.min_repeat_s)
    rss = peak_rss_mb()

    net.set_train(False)
    xb = Tensor(rng.standard_normal((args.infer_batch, 3, size, size), dtype=np.float32))
    infer = timed_rounds(lambda: net(xb).asnumpy(), args.warmup, args.repeats, args.min_repeat_s)
    x1 = Tensor(rng.standard_normal((1, 3, size, size), dtype=np.float32))
    latency = timed_rounds(lambda: net(x1).asnumpy(), args.warmup, args.repeats, args.min_repeat_s)
    return {
        "params_m": params / 1e6,
        "threads": threads,
        "amp_level": precision.amp_level,
        "train": dict(
            _throughput(train, args.batch_size),
            compile_s=compile_s,
            first_step_s=compile_s + train["first_s"],
            steps_per_round=train["calls_per_round"],
        ),
        "peak_rss_mb": rss,
        "infer": dict(_throughput(infer, args.infer_batch), compile_s=infer["first_s"], batch_size=args.infer_batch),
        "latency_b1_ms": dict(
            summarize([latency["per_call_s"][k] for k in ("median", "min", "max")], 1000.0),
            compile_s=latency["first_s"],
        ),
        "isa": os.environ.get(ISA_ENV, "unset"),
        "isa_setting": runtime.ISA_SETTING if args.variant in ("ours", "ours_nokern", "mindcv_isa") else None,
        "cpu_kernels": bool(runtime.CPU_SETTINGS.get("cpu_kernels")) if args.variant.startswith("ours") else False,
    }


def _worker_paired(args) -> dict:
    """Our model and mindcv's in one process under this package's defaults (ISA cap, threads),
    their training steps alternated round by round: whatever else runs on the machine slows
    both alike, so the ratio holds on a busy machine where separate runs do not."""
    import mindcv_mobile  # noqa: F401  (first: the package's ISA rule, before MindSpore loads)

    # isort: split
    import mindcv
    import numpy as np
    from mindspore import Tensor

    from mindcv_mobile import build, runtime

    cfg = bench_config(args)
    rt = runtime.init_runtime(cfg)
    precision = build.build_precision(cfg, "CPU")
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size), dtype=np.float32))
    y = Tensor(rng.integers(0, cfg.num_classes, args.batch_size).astype(np.int32))
    steps = {}
    for name, net in (
        ("ours", build.build_model(cfg, cpu_kernels=rt.cpu_kernels)),
        ("mindcv_isa", mindcv.models.create_model(cfg.model, num_classes=cfg.num_classes)),
    ):
        # The same optimizer and step for both (a constant LR: only the step's cost is measured).
        step = build.build_train_step(cfg, net, build.build_optimizer(cfg, net, cfg.lr), precision)
        step.set_train(True)
        for _ in range(1 + args.warmup):
            step(x, y).asnumpy()
        steps[name] = step
    wall: dict = {name: [] for name in steps}
    cpu: dict = {name: [] for name in steps}
    for _ in range(max(3, 2 * args.repeats)):
        for name, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step(x, y).asnumpy()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    out = {
        name: {
            "img_per_s": summarize([args.batch_size / t for t in wall[name]]),
            "cpu_ms_per_step": summarize(cpu[name], 1000.0),
        }
        for name in steps
    }
    out["train_vs_mindcv_isa"] = statistics.median(wall["mindcv_isa"]) / statistics.median(wall["ours"])
    out["train_cpu_vs_mindcv_isa"] = statistics.median(cpu["mindcv_isa"]) / statistics.median(cpu["ours"])
    out["steps_each"] = len(wall["ours"])
    return out


def _import_timm():
    """timm imports torchvision at import time; PyPI's torchvision wheels are CUDA builds whose
    extension fails beside a CPU-only torch (and timm's MobileNets never call it). If torchvision
    is missing or broken, stand in an empty stub for it so timm's model code loads."""
    try:
        import timm

        return timm
    except (ImportError, RuntimeError) as err:
        if "torchvision" not in repr(err) and util.find_spec("torchvision") is not None:
            raise
    import importlib.abc
    import importlib.machinery
    import types

    def _stub_attribute(owner, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Meta(name, (_Stub,), {})
        setattr(owner, name, sub)
        return sub

    class _Meta(type):
        __getattr__ = _stub_attribute

    class _Stub(metaclass=_Meta):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not usable here (benchmark stub)")

    class _Module(types.ModuleType):
        __path__: list = []
        __getattr__ = _stub_attribute

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname == "torchvision" or fullname.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            return _Module(spec.name)

        def exec_module(self, module):
            pass

    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Finder())
    import timm

    return timm


def _worker_timm(args) -> dict:
    import torch

    timm = _import_timm()
    name = timm_name(args.model)
    if name not in timm.list_models(name):
        raise ValueError(f"timm has no model {name!r} (for {args.model})")
    import yaml

    # The YAML itself, not load_config: importing mindcv_mobile would set the oneDNN ISA cap, which
    # PyTorch's oneDNN reads too, and timm is measured as its users run it.
    with open(args.recipe or find_recipe(args.model), encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=1000)
    channels_last = args.variant == "timm_cl"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    params = sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var"))
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(recipe.get("label_smoothing", 0.0)))
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=float(recipe.get("lr", 0.1)),
        momentum=float(recipe.get("momentum", 0.9)),
        weight_decay=float(recipe.get("weight_decay", 0.0)),
    )
    size = args.image_size
    x = torch.randn(args.batch_size, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch_size,))
    net.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        loss.item()

    train = timed_rounds(step, args.warmup, args.repeats, args.min_repeat_s)
    rss = peak_rss_mb()
    net.eval()
    xb = torch.randn(args.infer_batch, 3, size, size).contiguous(memory_format=fmt)
    x1 = torch.randn(1, 3, size, size).contiguous(memory_format=fmt)
    with torch.inference_mode():
        infer = timed_rounds(lambda: net(xb).sum().item(), args.warmup, args.repeats, args.min_repeat_s)
        latency = timed_rounds(lambda: net(x1).sum().item(), args.warmup, args.repeats, args.min_repeat_s)
    return {
        "params_m": params / 1e6,
        "threads": torch.get_num_threads(),
        "amp_level": "fp32",
        "train": dict(
            _throughput(train, args.batch_size),
            compile_s=None,
            first_step_s=train["first_s"],
            steps_per_round=train["calls_per_round"],
        ),
        "peak_rss_mb": rss,
        "infer": dict(_throughput(infer, args.infer_batch), compile_s=None, batch_size=args.infer_batch),
        "latency_b1_ms": dict(
            summarize([latency["per_call_s"][k] for k in ("median", "min", "max")], 1000.0), compile_s=None
        ),
        "isa": os.environ.get(ISA_ENV, "unset"),
        "isa_setting": None,
        "framework_version": f"torch {torch.__version__}, timm {timm.__version__}",
        "memory_format": "channels_last" if channels_last else "NCHW",
    }


def write_jpeg_tree(root: str, images: int, classes: int = 10, size=(500, 375), seed: int = 0) -> str:
    """``images`` JPEGs (quality 90) of ImageNet's average size under ``root/train/<class>/``:
    smooth random colour fields plus noise, so they decode like photos rather than flat colour.
    Written once; an existing complete tree is reused."""
    import numpy as np
    from PIL import Image

    split = os.path.join(root, "train")
    marker = os.path.join(root, f".complete-{images}-{classes}-{size[0]}x{size[1]}")
    if os.path.isfile(marker):
        return root
    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = os.path.join(split, f"class_{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-24, 25, (size[1], size[0], 3), dtype=np.int16)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    open(marker, "w").close()
    return root


def _worker_pipeline(args) -> dict:
    import mindcv_mobile  # noqa: F401
    from mindcv_mobile import build, runtime
    from mindcv_mobile.config import load_config
    from mindcv_mobile.data import create_dataset, create_loader

    model = args.models.split(",")[0]
    cfg = load_config(
        args.recipe or find_recipe(model),
        dict(model=model, image_resize=args.image_size, batch_size=args.batch_size, data_dir=args.data_dir),
    )
    workers = args.workers or runtime.data_workers(cfg.num_parallel_workers)
    dataset = create_dataset(
        cfg.dataset, cfg.data_dir, cfg.train_split, shuffle=True, num_parallel_workers=workers, seed=cfg.seed
    )
    transforms = build.build_transforms(cfg, True)
    loader = create_loader(
        dataset,
        cfg.batch_size,
        drop_remainder=True,
        is_training=True,
        transform=transforms,
        num_classes=1000,
        num_parallel_workers=workers,
    )
    iterator = loader.create_tuple_iterator(num_epochs=-1, output_numpy=True)

    def next_batch():
        try:
            return next(iterator)
        except StopIteration:  # end of an epoch; the iterator goes on with the next one
            return next(iterator)

    rounds = timed_rounds(next_batch, args.warmup + 2, args.repeats, args.min_repeat_s, max_steps=200)
    return {
        "workers": workers,
        "images": dataset.get_dataset_size(),
        "data_dir": cfg.data_dir,
        "augment": f"RandomCropDecodeResize({cfg.image_resize}, scale {tuple(cfg.scale)}) + hflip {cfg.hflip} + "
        f"ColorJitter {cfg.color_jitter} + normalize + HWC2CHW, batch {cfg.batch_size}",
        **_throughput(rounds, cfg.batch_size),
    }


def _worker_e2e(args) -> dict:
    import mindcv_mobile  # noqa: F401
    from mindcv_mobile import runtime
    from mindcv_mobile.config import load_config
    from mindcv_mobile.tasks import train

    steps = args.e2e_steps
    epochs = 1 + args.repeats  # the first epoch compiles the graph and is not timed
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as run_dir:
        cfg = load_config(
            args.recipe or find_recipe(args.model),
            dict(
                model=args.model,
                batch_size=args.batch_size,
                image_resize=args.image_size,
                num_classes=1000,
                data_dir=args.data_dir,
                device_target="CPU",
                distribute=False,
                pretrained=False,
                ckpt_path="",
                epoch_size=epochs,
                warmup_epochs=0,
                decay_epochs=epochs,
                num_samples=steps * args.batch_size,
                val_while_train=False,
                ckpt_save_dir=run_dir,
                keep_checkpoint_max=1,
                ckpt_save_interval=epochs,
            ),
        )
        start = time.perf_counter()
        result = train(cfg)
        total = time.perf_counter() - start
    timed = [row["img_per_s"] for row in result.history[1:]]
    return {
        "img_per_s": summarize(timed),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "total_s": total,
        "first_epoch_s": steps * args.batch_size / result.history[0]["img_per_s"],
        "sink_mode": runtime.CPU_SETTINGS.get("sink_mode"),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_main(args) -> dict:
    if args.variant == "pipeline":
        return _worker_pipeline(args)
    if args.variant == "e2e":
        return _worker_e2e(args)
    if args.variant == "paired":
        return _worker_paired(args)
    if args.variant in ("timm", "timm_cl"):
        return _worker_timm(args)
    return _worker_mindspore(args)


# ------------------------------------------------------------------------------------ driver
def variant_env(variant: str) -> dict:
    env = dict(BASE_ENV)
    env.setdefault("GLOG_v", "3")
    if variant in ("mindcv", "ours_noisa"):
        env[ISA_ENV] = ISA_NO_CAP
    if variant == "ours_nokern":
        env["MINDCV_MOBILE_CPU_KERNELS"] = "0"
    return env


def available(variant: str) -> Optional[str]:
    """None if ``variant`` can run here, else why not."""
    if variant.startswith("mindcv") and util.find_spec("mindcv") is None:
        return "mindcv is not installed (pip install mindcv==0.3.0 --no-deps)"
    if variant.startswith("timm") and (util.find_spec("timm") is None or util.find_spec("torch") is None):
        return "timm/torch are not installed (pip install -e .[bench])"
    return None


def run_worker(args, variant: str, model: Optional[str]) -> dict:
    """Run one measurement in a fresh interpreter; its result or {'error': ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--variant",
        variant,
        "--result-file",
        result_file,
        "--models",
        args.models,
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--infer-batch",
        str(args.infer_batch),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--min-repeat-s",
        str(args.min_repeat_s),
        "--e2e-steps",
        str(args.e2e_steps),
        "--workers",
        str(args.workers or 0),
    ]
    if model:
        cmd += ["--model", model]
    if args.recipe:
        cmd += ["--recipe", args.recipe]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    label = f"{model or '-'} / {variant}"
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=variant_env(variant), cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
        )
        with open(result_file, encoding="utf-8") as f:
            text = f.read()
        result = json.loads(text) if text else {}
        if proc.returncode != 0 or not result:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            result = {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    except subprocess.TimeoutExpired:
        result = {"error": f"timed out after {args.timeout} s"}
    finally:
        os.unlink(result_file)
    result.update(variant=variant, model=model, wall_s=time.perf_counter() - start)
    print(f"[bench] {label}: {brief(result)}", file=sys.stderr, flush=True)
    return result


def brief(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    if "train_vs_mindcv_isa" in r:
        return f"ours/mindcv+ISA fix {r['train_vs_mindcv_isa']:.2f}x (wall), {r['train_cpu_vs_mindcv_isa']:.2f}x (CPU)"
    if "train" in r:
        return (
            f"train {r['train']['img_per_s']['median']:.1f} img/s, infer {r['infer']['img_per_s']['median']:.1f} "
            f"img/s, b1 {r['latency_b1_ms']['median']:.1f} ms, rss {r['peak_rss_mb']:.0f} MB"
        )
    return f"{r['img_per_s']['median']:.1f} img/s"


def environment() -> dict:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo", encoding="utf-8")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")),
        [],
    )
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": cpu_cores(),
        "avx512": "avx512f" in flags,
        "python": platform.python_version(),
        "mindspore": version("mindspore"),
        "mindcv": version("mindcv"),
        "torch": version("torch"),
        "timm": version("timm"),
        "device": "CPU",
        "user_isa_env": BASE_ENV.get(ISA_ENV),
        "loadavg_start": _loadavg(),
        "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:]),
    }


def _loadavg() -> Optional[list]:
    try:
        return [float(v) for v in open("/proc/loadavg", encoding="utf-8").read().split()[:3]]
    except OSError:
        return None


def _fmt(stats: Optional[dict], digits: int = 1) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def ratio(a: Optional[dict], b: Optional[dict], key: str) -> Optional[float]:
    try:
        return a[key]["img_per_s"]["median"] / b[key]["img_per_s"]["median"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"Command: `{env['command']}`",
        "",
        f"{env['date']}: {env['cpu']}, {env['cores']} cores{' (AVX-512)' if env['avx512'] else ''}, "
        f"MindSpore {env['mindspore']}, mindcv {env['mindcv'] or '-'}, torch {env['torch'] or '-'}, "
        f"timm {env['timm'] or '-'}; batch {report['batch_size']}, {report['image_size']} px; "
        f"load average {env['loadavg_start']} at start, {env.get('loadavg_end')} at end; best of "
        f"{report.get('sweeps', 1)} interleaved sweep(s) per variant.",
        "",
        "| model | variant | params (M) | ISA | threads | CPU kernels | compile (s) | first step (s) | train ms/step | "
        "train img/s | infer img/s (b{0}) | b1 latency (ms) | peak RSS (MB) |".format(report["infer_batch"]),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | error: {r['error'][:120]} ||||||||||||")
            continue
        compile_s = r["train"]["compile_s"]
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['params_m']:.2f} | {r['isa']} | {r['threads'] or 'default'} | "
            f"{'yes' if r.get('cpu_kernels') else 'no'} | {'-' if compile_s is None else f'{compile_s:.1f}'} | "
            f"{r['train']['first_step_s']:.1f} | "
            f"{_fmt(r['train']['ms_per_step'], 0)} | {_fmt(r['train']['img_per_s'])} | "
            f"{_fmt(r['infer']['img_per_s'])} | {_fmt(r['latency_b1_ms'])} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Ratios (median img/s of ours / the other; training, then inference at batch {report['infer_batch']}):",
        "",
        "| model | train vs mindcv as shipped | train vs mindcv + ISA fix | same, by CPU time | train vs timm fp32 | "
        "train vs timm channels_last | infer vs mindcv + ISA fix | infer vs timm fp32 | "
        "pipeline / train step | e2e train img/s (entry point, real data) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pipeline = report.get("pipeline") or {}
    for model, row in report["ratios"].items():
        cells = [
            row.get(k)
            for k in (
                "train_vs_mindcv",
                "train_vs_mindcv_isa",
                "train_cpu_vs_mindcv_isa",
                "train_vs_timm",
                "train_vs_timm_cl",
                "infer_vs_mindcv_isa",
                "infer_vs_timm",
                "pipeline_vs_train",
            )
        ]
        e2e = report.get("e2e", {}).get(model)
        e2e_text = _fmt(e2e["img_per_s"]) if e2e and "img_per_s" in e2e else (e2e or {}).get("error", "-")
        lines.append(
            f"| {model} | " + " | ".join("-" if c is None else f"{c:.2f}x" for c in cells) + f" | {e2e_text} |"
        )
    paired = {m: r for m, r in (report.get("paired") or {}).items() if r}
    if paired:
        lines += [
            "",
            "Ours vs mindcv + ISA fix in one process, training steps alternated (fair on a busy machine):",
            "",
            "| model | ours img/s | mindcv + ISA fix img/s | ratio (wall) | ratio (CPU time) |",
            "|---|---|---|---|---|",
        ]
        for model, r in paired.items():
            if "error" in r:
                lines.append(f"| {model} | error: {r['error'][:120]} ||||")
            else:
                lines.append(
                    f"| {model} | {_fmt(r['ours']['img_per_s'])} | {_fmt(r['mindcv_isa']['img_per_s'])} | "
                    f"{r['train_vs_mindcv_isa']:.2f}x | {r['train_cpu_vs_mindcv_isa']:.2f}x |"
                )
    if pipeline:
        if "error" in pipeline:
            lines += ["", f"Pipeline: error: {pipeline['error']}"]
        else:
            lines += [
                "",
                f"Pipeline alone ({pipeline['images']} JPEGs in {pipeline['data_dir']}, {pipeline['augment']}, "
                f"{pipeline['workers']} workers): {_fmt(pipeline['img_per_s'])} img/s.",
            ]
    return "\n".join(lines) + "\n"


def compute_ratios(results: list, pipeline: Optional[dict]) -> dict:
    by = {(r["model"], r["variant"]): r for r in results if "error" not in r}
    out = {}
    for model in dict.fromkeys(r["model"] for r in results):
        ours = by.get((model, "ours"))
        row = {
            f"train_vs_{v}": ratio(ours, by.get((model, v)), "train")
            for v in ("mindcv", "mindcv_isa", "timm", "timm_cl", "ours_noisa", "ours_nokern")
        }
        row.update(
            {
                f"infer_vs_{v}": ratio(ours, by.get((model, v)), "infer")
                for v in ("mindcv", "mindcv_isa", "timm", "timm_cl")
            }
        )
        theirs = by.get((model, "mindcv_isa"))
        if ours and theirs:  # per step CPU time: the same comparison, less exposed to machine load
            row["train_cpu_vs_mindcv_isa"] = (
                theirs["train"]["cpu_ms_per_step"]["median"] / ours["train"]["cpu_ms_per_step"]["median"]
            )
        if ours and pipeline and "img_per_s" in pipeline:
            row["pipeline_vs_train"] = pipeline["img_per_s"]["median"] / ours["train"]["img_per_s"]["median"]
        out[model] = row
    return out


def best_runs(runs: list) -> list:
    """Per (model, variant), the sweep with the highest median training img/s: on a shared machine
    other processes only ever slow a run down, so the best of interleaved sweeps is the fairest
    estimate for every variant alike."""
    best: dict = {}
    for run in runs:
        key = (run["model"], run["variant"])
        if (
            key not in best
            or "error" in best[key]
            or ("error" not in run and run["train"]["img_per_s"]["median"] > best[key]["train"]["img_per_s"]["median"])
        ):
            best[key] = run
    return list(best.values())


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2, help="steps after the first (compiling) one, not timed")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds")
    p.add_argument("--min-repeat-s", type=float, default=3.0, help="each timed round runs at least this long")
    p.add_argument(
        "--sweeps",
        type=int,
        default=1,
        help="run every model's variants this many times, "
        "interleaved, and keep each variant's best run (a shared machine only slows runs down)",
    )
    p.add_argument("--recipe", default="", help="YAML recipe for loss/optimizer/augmentation (default: mindcv's)")
    p.add_argument("--pipeline", dest="pipeline", action="store_true", default=True)
    p.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="skip the data pipeline runs")
    p.add_argument("--e2e", dest="e2e", action="store_true", default=True)
    p.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the entry-point runs on real data")
    p.add_argument("--e2e-steps", type=int, default=6, help="steps per epoch of the entry-point run")
    p.add_argument("--paired", dest="paired", action="store_true", default=True)
    p.add_argument(
        "--no-paired",
        dest="paired",
        action="store_false",
        help="skip the in-process, step-alternating ours vs mindcv + ISA fix comparison",
    )
    p.add_argument(
        "--data-dir",
        default="",
        help="ImageFolder root with a train/ split (default: write "
        "--pipeline-images synthetic 500x375 JPEGs to a cache folder)",
    )
    p.add_argument("--pipeline-images", type=int, default=320)
    p.add_argument("--workers", type=int, default=0, help="data workers (0: the package's default for this CPU)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement subprocess")
    p.add_argument("--out", default="", help="write <out>.json and <out>.md (default: print only)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--model", default="", help=argparse.SUPPRESS)
    p.add_argument("--result-file", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch_size", "image_size", "infer_batch", "repeats", "e2e_steps", "pipeline_images", "sweeps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.min_repeat_s < 0:
        p.error(f"--warmup and --min-repeat-s must be >= 0, got {args.warmup} and {args.min_repeat_s}")
    return p, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args.worker:
        result = worker_main(args)
        with open(args.result_file, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return 0
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    for model in models:
        try:
            find_recipe(model) if not args.recipe else None
        except ValueError as err:
            parser.error(str(err))
    env = environment()
    print(
        f"MindSpore {env['mindspore']} on {env['device']} ({env['cpu']}, {env['cores']} cores, "
        f"AVX-512: {env['avx512']}); {ISA_ENV} as started: {env['user_isa_env'] or 'unset'}; "
        f"load average {env['loadavg_start']}",
        flush=True,
    )
    skipped = {v: why for v in variants if (why := available(v))}
    for v, why in skipped.items():
        print(f"skipping {v}: {why}", flush=True)
    if (args.pipeline or args.e2e) and not args.data_dir:
        cache = os.path.join(
            os.environ.get("MINDCV_MOBILE_HOME", os.path.expanduser("~/.cache/mindcv_mobile")), "bench_jpegs"
        )
        args.data_dir = write_jpeg_tree(cache, args.pipeline_images)
    all_runs, e2e, paired = [], {}, {}
    pipeline = run_worker(args, "pipeline", None) if args.pipeline else None
    for model in models:
        for sweep in range(args.sweeps):
            for variant in variants:
                if variant not in skipped:
                    all_runs.append(dict(run_worker(args, variant, model), sweep=sweep))
        if args.e2e and "ours" in variants:
            e2e[model] = run_worker(args, "e2e", model)
        if args.paired and "mindcv_isa" in variants and "mindcv_isa" not in skipped:
            paired[model] = run_worker(args, "paired", model)
    results = best_runs(all_runs)
    env["loadavg_end"] = _loadavg()
    report = {
        "environment": env,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "infer_batch": args.infer_batch,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "min_repeat_s": args.min_repeat_s,
        "sweeps": args.sweeps,
        "skipped": skipped,
        "results": results,
        "all_runs": all_runs,
        "pipeline": pipeline,
        "e2e": e2e,
        "paired": paired,
        "ratios": compute_ratios(results, pipeline),
    }
    for r in results:  # the setting each MindSpore run actually had, for the log
        if r.get("isa_setting"):
            print(f"{r['model']} / {r['variant']}: {r['isa_setting']}, threads {r['threads']}")
    table = markdown(report)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w", encoding="utf-8") as f:
            f.write(table)
        print(f"wrote {args.out}.json and {args.out}.md")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
