"""Training and inference speed of this package's MobileNets next to the fastest other way to run
the same networks on this CPU: mindcv 0.3.0's models (as shipped, and with the oneDNN ISA cap any
mindcv user can set) and timm's (PyTorch fp32, NCHW and channels_last).

    python benchmarks/bench.py --out benchmarks/results/cpu_b32_224

One protocol for every model and every variant:

* Duels. Every variant other than ``ours`` is measured in a duel with ``ours``: two worker
  processes, each with its own environment (ISA variable, threads), started, built and warmed
  one after the other (the first call, which compiles, and ``--warmup`` more, untimed), then
  ``--repeats`` rounds run alternately, ours, peer, ours, peer, ... One process runs at a time;
  the other waits on a pipe, and its CPU time during the other's round is recorded (it should
  be ~0). Every duel starts a fresh ``ours``.
* Rounds. A training round is ``--steps`` steps (forward + backward + update on fixed synthetic
  tensors, with the model's published recipe); an inference round ``--infer-steps`` calls at
  batch ``--infer-batch``, a latency round ``--latency-steps`` calls at batch 1 (eval mode). A
  duel runs all its training rounds, then its inference rounds, then its latency rounds.
* Ratios. Round k of ours is paired with round k of the peer, run right after it: ratio_k =
  the peer's seconds per call / ours' (ours' speed over the peer's, > 1 when ours is faster).
  Tables give the median and (min-max) of the ratio_k. Per model and measurement the "best
  peer" is the peer with the lowest median ratio, the fastest relative to ours: the headline.
* Real data, ours only and never divided by a synthetic figure: the ImageFolder pipeline alone,
  and ``mindcv_mobile.training.train`` (train.py's code path) on a folder of JPEGs.

Variants:

  ours        this package as its entry points run it: ``import mindcv_mobile`` first (oneDNN ISA
              cap on AVX-512 CPUs unless ONEDNN_MAX_CPU_ISA is set), ``init_runtime`` defaults
              (graph mode, one thread per core, compiled CPU kernels), the recipe's loss,
              optimizer and precision through ``build``.
  mindcv_isa  mindcv's model with this package's ISA rule (``import mindcv_mobile`` first), the
              same TrainStep, loss and optimizer; MindSpore's default threads.
  timm        timm's model in PyTorch fp32, NCHW; timm_cl: the same in channels_last. The recipe's
              label smoothing and SGD momentum / weight decay; PyTorch's default threads.
  mindcv      mindcv's model as its users run it: ONEDNN_MAX_CPU_ISA=ALL (oneDNN's "no cap", so
              that importing this package cannot cap it), otherwise as mindcv_isa.
  ours_noisa  (opt-in) ours with ONEDNN_MAX_CPU_ISA=ALL: what the cap alone is worth.
  ours_nokern (opt-in) ours with MindSpore's ops instead of the compiled CPU kernels
              (MINDCV_MOBILE_CPU_KERNELS=0): what the kernels alone are worth.

Results: ``<out>.json`` (every round's seconds, the machine, versions, load average, the exact
command) and ``<out>.md``.
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
import select  # noqa: E402
import shlex  # noqa: E402
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
PEERS = ("mindcv_isa", "timm", "timm_cl", "mindcv")  # the other ways to run the network: best-peer candidates
ABLATIONS = ("ours_noisa", "ours_nokern")  # ours with one of its speed settings undone
VARIANTS = ("ours",) + PEERS + ABLATIONS
DEFAULT_VARIANTS = ("ours",) + PEERS
MINDSPORE_VARIANTS = ("ours", "ours_noisa", "ours_nokern", "mindcv", "mindcv_isa")
PHASES = ("train", "infer", "latency")
LABELS = {
    "ours": "ours",
    "mindcv_isa": "mindcv + ISA fix",
    "timm": "timm fp32",
    "timm_cl": "timm channels_last",
    "mindcv": "mindcv as shipped",
    "ours_noisa": "ours without ISA cap",
    "ours_nokern": "ours without compiled kernels",
}
PUBLISHED_MIN_STEPS = 10  # training steps per round below which a run is a smoke test, not a result
BUSY_SHARE = 0.05  # share of the CPU lost to other work in a round above which the round counts as busy


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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def fixed_rounds(run_once: Callable[[], object], warmup: int, repeats: int, steps: int) -> dict:
    """``run_once`` (which must block until its result exists) once untimed, ``warmup`` more, then
    ``repeats`` rounds of ``steps`` calls: seconds per call of every round, wall and CPU."""
    for _ in range(1 + warmup):
        run_once()
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            run_once()
        wall.append((time.perf_counter() - start) / steps)
        cpu.append((time.process_time() - cpu_start) / steps)
    return {"wall_s": wall, "cpu_s": cpu}


# ------------------------------------------------------------------------------------ workers
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


def _setup_mindspore(args):
    """Build ``args.variant``'s network and train step; (facts about the run, prepare(phase))."""
    if args.variant.startswith("ours") or args.variant == "mindcv_isa":
        import mindcv_mobile  # noqa: F401  (first: the package's ISA rule, before MindSpore loads)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from mindcv_mobile import build, runtime

    # train.py's objects through its build step; the LR schedule (--lr, no warmup) outlasts every
    # step the worker can be asked for.
    cfg = bench_config(args, epoch_size=1, warmup_epochs=0, decay_epochs=1, lr=args.lr)
    precision = build.build_precision(cfg, "CPU")
    ours = args.variant.startswith("ours")
    if ours:
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
    schedule_steps = max(1000, 1 + args.warmup + args.repeats * args.steps)
    optimizer = build.build_optimizer(cfg, net, build.build_lr_schedule(cfg, steps_per_epoch=schedule_steps))
    train_step = build.build_train_step(cfg, net, optimizer, precision)
    rng = np.random.default_rng(0)
    size = args.image_size
    x = Tensor(rng.standard_normal((args.batch_size, 3, size, size), dtype=np.float32))
    y = Tensor(rng.integers(0, cfg.num_classes, args.batch_size).astype(np.int32))
    eval_inputs = {
        "infer": Tensor(rng.standard_normal((args.infer_batch, 3, size, size), dtype=np.float32)),
        "latency": Tensor(rng.standard_normal((1, 3, size, size), dtype=np.float32)),
    }

    def train_once() -> float:
        out = train_step(x, y)
        return float((out[0] if isinstance(out, tuple) else out).asnumpy())

    def prepare(phase: str):
        if phase == "train":
            train_step.set_train(True)
            start = time.perf_counter()
            train_step.compile(x, y)
            return train_once, {"compile_s": time.perf_counter() - start}
        net.set_train(False)
        data = eval_inputs[phase]
        return (lambda: net(data).asnumpy()), {}

    info = {
        "params_m": params / 1e6,
        "threads": threads,
        "amp_level": precision.amp_level,
        "isa": os.environ.get(ISA_ENV, "unset"),
        "isa_setting": runtime.ISA_SETTING if args.variant in ("ours", "ours_nokern", "mindcv_isa") else None,
        "cpu_kernels": bool(runtime.CPU_SETTINGS.get("cpu_kernels")) if ours else False,
        "framework": f"MindSpore {ms.__version__}",
        "memory_format": "NCHW",
    }
    return info, prepare


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


def _setup_timm(args):
    """timm's network, loss and optimizer in PyTorch; (facts about the run, prepare(phase))."""
    import torch

    timm = _import_timm()
    # the stand-in of _import_timm has no version
    torchvision = getattr(sys.modules.get("torchvision"), "__version__", None) or "stub"
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
        lr=args.lr,  # as the MindSpore variants: the recipe's value diverges without its warmup
        momentum=float(recipe.get("momentum", 0.9)),
        weight_decay=float(recipe.get("weight_decay", 0.0)),
    )
    size = args.image_size
    x = torch.randn(args.batch_size, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch_size,))
    eval_inputs = {
        "infer": torch.randn(args.infer_batch, 3, size, size).contiguous(memory_format=fmt),
        "latency": torch.randn(1, 3, size, size).contiguous(memory_format=fmt),
    }

    def train_once() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def prepare(phase: str):
        if phase == "train":
            net.train()
            return train_once, {"compile_s": None}  # eager: nothing to compile
        net.eval()
        data = eval_inputs[phase]

        def infer_once():
            with torch.inference_mode():
                return net(data).numpy()

        return infer_once, {}

    info = {
        "params_m": params / 1e6,
        "threads": torch.get_num_threads(),
        "amp_level": "fp32",
        "isa": os.environ.get(ISA_ENV, "unset"),
        "isa_setting": None,
        "cpu_kernels": False,
        "framework": f"torch {torch.__version__}, timm {timm.__version__}, torchvision {torchvision}",
        "memory_format": "channels_last" if channels_last else "NCHW",
    }
    return info, prepare


def serve(args) -> int:
    """The worker of one variant: build it, then answer the driver's requests, one JSON line
    each, until it says exit. ``prepare``: switch to a phase, run its first call (compiling)
    and ``--warmup`` more, untimed; ``run``: time ``steps`` calls of that phase."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the libraries print goes to the log, not into the replies

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    setup = _setup_timm if args.variant in ("timm", "timm_cl") else _setup_mindspore
    info, prepare = setup(args)
    send(dict(info, variant=args.variant, model=args.model, pid=os.getpid()))
    calls: dict = {}
    while True:
        line = sys.stdin.readline()
        request = json.loads(line) if line.strip() else {"cmd": "exit"}
        if request["cmd"] == "exit":
            return 0
        phase = request["phase"]
        try:
            if request["cmd"] == "prepare":
                call, facts = prepare(phase)
                start = time.perf_counter()
                out = call()
                first = time.perf_counter() - start
                warmup = []
                for _ in range(args.warmup):
                    start = time.perf_counter()
                    call()
                    warmup.append(time.perf_counter() - start)
                calls[phase] = call
                shape = list(getattr(out, "shape", ())) or None
                send(dict(facts, first_s=first, warmup_s=warmup, output_shape=shape, peak_rss_mb=peak_rss_mb()))
            else:
                call, steps = calls[phase], int(request["steps"])
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    out = call()
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                loss = out if isinstance(out, float) else None
                send(dict(steps=steps, wall_s=wall / steps, cpu_s=cpu / steps, loss=loss, peak_rss_mb=peak_rss_mb()))
        except Exception as err:  # the driver records it and ends the duel
            send({"error": f"{type(err).__name__}: {err}"})
            raise


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

    rounds = fixed_rounds(next_batch, args.warmup + 2, args.repeats, args.pipeline_batches)
    return {
        "workers": workers,
        "images": dataset.get_dataset_size(),
        "data_dir": cfg.data_dir,
        "augment": f"RandomCropDecodeResize({cfg.image_resize}, scale {tuple(cfg.scale)}) + hflip {cfg.hflip} + "
        f"ColorJitter {cfg.color_jitter} + normalize + HWC2CHW, batch {cfg.batch_size}",
        "batches_per_round": args.pipeline_batches,
        "round_s_per_batch": rounds["wall_s"],
        "img_per_s": summarize([cfg.batch_size / t for t in rounds["wall_s"]]),
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
                lr=args.lr,
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
        "epoch_img_per_s": [row["img_per_s"] for row in result.history],
        "epochs": epochs,
        "steps_per_epoch": steps,
        "total_s": total,
        "first_epoch_s": steps * args.batch_size / result.history[0]["img_per_s"],
        "sink_mode": runtime.CPU_SETTINGS.get("sink_mode"),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_main(args) -> dict:
    """The one-shot measurements (one process, result in a file): pipeline and e2e."""
    if args.variant == "pipeline":
        return _worker_pipeline(args)
    if args.variant == "e2e":
        return _worker_e2e(args)
    raise ValueError(f"one-shot worker must be 'pipeline' or 'e2e', got {args.variant!r}")


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
    """None if ``variant`` can run here, else why not (naming the missing package)."""
    if variant.startswith("mindcv") and util.find_spec("mindcv") is None:
        return "mindcv is not installed (pip install mindcv==0.3.0 --no-deps)"
    if variant.startswith("timm"):
        for package, how in (
            ("torch", "pip install torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu"),
            ("timm", "pip install timm==1.0.31 --no-deps"),
        ):
            if util.find_spec(package) is None:
                return f"{package} is not installed ({how})"
    return None


def worker_options(args) -> list:
    """The options a worker process needs from the driver's."""
    keys = ("models", "batch_size", "image_size", "infer_batch", "warmup", "repeats", "steps", "e2e_steps", "lr")
    keys += (
        ("pipeline_batches", "workers")
        + (("recipe",) if args.recipe else ())
        + (("data_dir",) if args.data_dir else ())
    )
    return [item for key in keys for item in ("--" + key.replace("_", "-"), str(getattr(args, key)))]


class WorkerError(RuntimeError):
    pass


class Worker:
    """One variant's measuring process (``bench.py --serve``), driven over a pipe. ``info``: what
    it reported after building (params, ISA, threads, ...); ``request(cmd=..., ...)``: one answer."""

    def __init__(self, args, variant: str, model: str):
        self.variant, self.model, self.timeout = variant, model, args.timeout
        self.log = tempfile.TemporaryFile()
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--variant", variant, "--model", model]
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd + worker_options(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=variant_env(variant),
            cwd=ROOT,
        )
        self._pending = b""
        try:
            self.info = self._receive()
        except WorkerError:
            self.close()
            raise
        self.info["startup_s"] = time.perf_counter() - start

    def request(self, **command) -> dict:
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None
        return self._receive()

    def _receive(self) -> dict:
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + self.timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise WorkerError(f"{self.variant} worker ({self.model}) gave no answer within {self.timeout:.0f} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerError(self._died())
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.variant} worker ({self.model}): {reply['error']}")
        return reply

    def _died(self) -> str:
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.seek(0)
        tail = [line for line in self.log.read().decode(errors="replace").splitlines() if line.strip()][-3:]
        return f"{self.variant} worker ({self.model}) exited with code {code}: {' | '.join(tail)[-600:]}"

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the process has used so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            try:
                stream.close()
            except OSError:  # unflushed input to a process that is gone
                pass


def machine_cpu() -> Optional[tuple]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def foreign_load(before: tuple, after: tuple, seconds: float) -> dict:
    """Shares of the machine's CPU capacity over a round (cores x seconds) used by processes other
    than the duel's workers, and lost to the hypervisor (steal); both ~0 on a quiet machine.
    ``before``/``after``: ({worker: its CPU seconds}, machine_cpu())."""
    if before[1] is None or after[1] is None or seconds <= 0:
        return {"others_cpu_share": None, "steal_share": None}
    capacity = seconds * cpu_cores()
    workers = sum(after[0][n] - before[0][n] for n in before[0])
    others = after[1][0] - before[1][0] - workers
    return {"others_cpu_share": max(0.0, others) / capacity, "steal_share": (after[1][1] - before[1][1]) / capacity}


def phase_steps(args, phase: str) -> int:
    return {"train": args.steps, "infer": args.infer_steps, "latency": args.latency_steps}[phase]


def run_duel(args, model: str, peer: Optional[str]) -> dict:
    """Ours and ``peer`` (None: ours alone) in two processes, rounds alternated ours, peer, ...;
    every reply of both, as the JSON keeps it."""
    names = ("ours", peer) if peer else ("ours",)
    record: dict = {"model": model, "peer": peer, "loadavg_before": _loadavg(), "workers": {}}
    workers: dict = {}
    label = f"{model}: ours vs {peer}" if peer else f"{model}: ours"
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        for name in names:  # one after the other: neither builds or compiles while the other does
            workers[name] = Worker(args, name, model)
            record["workers"][name] = {"info": workers[name].info, "prepare": {}, "rounds": {p: [] for p in PHASES}}
        for phase in PHASES:
            for name, worker in workers.items():
                record["workers"][name]["prepare"][phase] = worker.request(cmd="prepare", phase=phase)
            for _ in range(args.repeats):
                for name, worker in workers.items():
                    before = {n: w.cpu_s() for n, w in workers.items()}, machine_cpu()
                    round_start = time.perf_counter()
                    reply = worker.request(cmd="run", phase=phase, steps=phase_steps(args, phase))
                    seconds = time.perf_counter() - round_start
                    after = {n: w.cpu_s() for n, w in workers.items()}, machine_cpu()
                    reply["idle_peer_cpu_s"] = sum(after[0][n] - before[0][n] for n in workers if n != name)
                    reply.update(foreign_load(before, after, seconds))
                    record["workers"][name]["rounds"][phase].append(reply)
    except WorkerError as err:
        record["error"] = str(err)
    finally:
        for worker in workers.values():
            worker.close()
    record["loadavg_after"] = _loadavg()
    record["wall_s"] = time.perf_counter() - start
    print(f"[bench] {label}: {brief_duel(record)}", file=sys.stderr, flush=True)
    return record


def run_worker(args, variant: str, model: Optional[str]) -> dict:
    """Run a one-shot measurement (pipeline, e2e) in a fresh interpreter; its result or {'error': ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant, "--result-file", result_file]
    cmd += worker_options(args) + (["--model", model] if model else [])
    label = f"{model or '-'} / {variant}"
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=variant_env("ours"), cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
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
    shown = "ERROR " + result["error"] if "error" in result else f"{result['img_per_s']['median']:.1f} img/s"
    print(f"[bench] {label}: {shown}", file=sys.stderr, flush=True)
    return result


# ------------------------------------------------------------------------------------ results
def paired_ratios(duel: dict, phase: str) -> Optional[dict]:
    """Ours' speed over the peer's, round by round: the peer's seconds per call in round k over
    ours' in round k (run just before it). Median/min/max, every value, and the same by CPU time."""
    sides = duel["workers"]
    if not duel.get("peer") or duel["peer"] not in sides or "ours" not in sides:
        return None
    pairs = list(zip(sides["ours"]["rounds"][phase], sides[duel["peer"]]["rounds"][phase]))
    if not pairs:
        return None
    wall = [theirs["wall_s"] / ours["wall_s"] for ours, theirs in pairs]
    cpu = [theirs["cpu_s"] / ours["cpu_s"] for ours, theirs in pairs if ours["cpu_s"] > 0]
    return dict(summarize(wall), per_round=wall, rounds=len(wall), cpu=summarize(cpu) if cpu else None)


def compute_ratios(duels: list) -> dict:
    """{model: {phase: {"vs": {peer: paired ratios}, "best_peer": the peer of lowest median ratio}}}."""
    out: dict = {}
    for duel in duels:
        for phase in PHASES:
            ratios = paired_ratios(duel, phase)
            if ratios:
                out.setdefault(duel["model"], {}).setdefault(phase, {"vs": {}})["vs"][duel["peer"]] = ratios
    for by_phase in out.values():
        for entry in by_phase.values():
            peers = [p for p in entry["vs"] if p in PEERS]
            entry["best_peer"] = min(peers, key=lambda p: entry["vs"][p]["median"]) if peers else None
    return out


def variant_summary(duels: list, model: str, variant: str, batch: dict) -> Optional[dict]:
    """One variant's figures for one model over every duel it ran in (ours: all of them):
    median/min/max over all its rounds; compile and first step: median over its processes."""
    sides = [d["workers"][variant] for d in duels if d["model"] == model and variant in d["workers"]]
    if not sides:
        return None
    out = dict(sides[0]["info"], processes=len(sides))
    for phase in PHASES:
        prepared = [s["prepare"][phase] for s in sides if phase in s["prepare"]]
        rounds = [r for s in sides for r in s["rounds"][phase]]
        if not prepared or not rounds:
            continue
        compile_s = [p["compile_s"] for p in prepared if p.get("compile_s") is not None]
        wall = [r["wall_s"] for r in rounds]
        out[phase] = {
            "ms_per_call": summarize(wall, 1000.0),
            "img_per_s": summarize([batch[phase] / t for t in wall]),
            "cpu_ms_per_call": summarize([r["cpu_s"] for r in rounds], 1000.0),
            "rounds": len(rounds),
            "steps_per_round": rounds[0]["steps"],
            "first_call_s": statistics.median(p["first_s"] for p in prepared),
            "compile_s": statistics.median(compile_s) if compile_s else None,
            "output_shape": prepared[0].get("output_shape"),
        }
    if "train" in out:
        train = out["train"]
        train["first_step_s"] = (train["compile_s"] or 0.0) + train["first_call_s"]
        # after the training rounds, before any inference graph: the memory training needs
        out["peak_rss_mb"] = max(s["rounds"]["train"][-1]["peak_rss_mb"] for s in sides if s["rounds"]["train"])
    return out


def summarize_variants(duels: list, models: list, variants: list, args) -> dict:
    batch = {"train": args.batch_size, "infer": args.infer_batch, "latency": 1}
    out: dict = {}
    for model in models:
        for variant in variants:
            summary = variant_summary(duels, model, variant, batch)
            if summary:
                out.setdefault(model, {})[variant] = summary
    return out


def quiet_check(duels: list) -> dict:
    """Over every timed round: the most CPU seconds a waiting worker used during the other's round
    (~0: it took no cores), and the median and largest share of the machine's CPU used by other
    processes and lost to the hypervisor (steal). Numbers from a busy machine are not results."""
    rounds = [r for d in duels for side in d["workers"].values() for phase in PHASES for r in side["rounds"][phase]]

    def values(key):
        return [r[key] for r in rounds if r.get(key) is not None and r[key] == r[key]]  # not None, not nan

    out = {"idle_peer_cpu_s_max": max(values("idle_peer_cpu_s"), default=None)}
    for key in ("others_cpu_share", "steal_share"):
        found = values(key)
        out[key] = {"median": statistics.median(found), "max": max(found)} if found else None
    taken = [a + b for a, b in zip(values("others_cpu_share"), values("steal_share"))]
    out["nonfinite_losses"] = sorted(
        {
            f"{d['model']} / {name}"
            for d in duels
            for name, side in d["workers"].items()
            for r in side["rounds"]["train"]
            if r.get("loss") is not None and not math.isfinite(r["loss"])
        }
    )
    out["rounds"], out["rounds_busy"] = len(taken), sum(t > BUSY_SHARE for t in taken)
    return out


def brief_duel(record: dict) -> str:
    parts = []
    for phase in PHASES:
        ratios = paired_ratios(record, phase)
        if ratios:
            parts.append(f"{phase} {_x(ratios)}")
    if "error" in record:
        parts.append("ERROR " + record["error"])
    return ", ".join(parts) or "done"


def environment() -> dict:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    def cpuinfo(key):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "")
        except OSError:
            return ""

    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpuinfo("model name") or platform.processor(),
        "cores": cpu_cores(),
        "avx512": "avx512f" in cpuinfo("flags").split(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mindspore": version("mindspore"),
        "mindcv": version("mindcv"),
        "torch": version("torch"),
        "timm": version("timm"),
        "torchvision": version("torchvision"),
        "numpy": version("numpy"),
        "checkout": _checkout(),
        "device": "CPU",
        "user_isa_env": BASE_ENV.get(ISA_ENV),
        "loadavg_start": _loadavg(),
        "command": "python benchmarks/bench.py " + shlex.join(sys.argv[1:]),
    }


def _checkout() -> Optional[str]:
    """The source tree's commit, '+ local changes' when it differs from it; None outside git."""
    try:
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" + local changes" if dirty else "")


def _loadavg() -> Optional[list]:
    try:
        return [float(v) for v in open("/proc/loadavg", encoding="utf-8").read().split()[:3]]
    except OSError:
        return None


def _fmt(stats: Optional[dict], digits: int = 1) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def _x(stats: Optional[dict]) -> str:
    return "-" if not stats else f"{stats['median']:.2f}x ({stats['min']:.2f}-{stats['max']:.2f})"


def quiet_line(quiet: dict) -> str:
    """How quiet the machine was during the timed rounds, and a warning when it was not."""
    others, steal, idle = quiet.get("others_cpu_share"), quiet.get("steal_share"), quiet.get("idle_peer_cpu_s_max")
    if not others:
        return "Machine load during the rounds: not measured (no /proc/stat)."
    text = (
        f"Machine load during the timed rounds: other processes used {100 * others['median']:.1f} % of the CPU "
        f"(median over rounds; at most {100 * others['max']:.1f} %), the hypervisor took "
        f"{100 * steal['median']:.1f} % (at most {100 * steal['max']:.1f} %)"
        + ("" if idle is None else f"; a waiting worker used at most {idle:.2f} CPU s during the other's round")
        + f"; {quiet['rounds_busy']} of {quiet['rounds']} rounds lost over {100 * BUSY_SHARE:.0f} % of the CPU."
    )
    if quiet.get("nonfinite_losses"):
        text += f" **Non-finite training loss in: {', '.join(quiet['nonfinite_losses'])}.**"
    if others["median"] + steal["median"] > BUSY_SHARE:
        text += (
            f" **Busy machine (a typical round lost over {100 * BUSY_SHARE:.0f} % of the CPU to other work): "
            "absolute figures are unreliable and ratios may be skewed; not a result.**"
        )
    return text


def _ratio_table(report: dict, phase: str, lead: str) -> list:
    peers = [v for v in report["variants"] if v != "ours" and v not in report["skipped"]]
    head = f"| model | {lead} | best peer | ours / best peer | " + " | ".join(f"ours / {LABELS[p]}" for p in peers)
    lines = [head + " |", "|---" * (4 + len(peers)) + "|"]
    for model, by_phase in report["ratios"].items():
        entry = by_phase.get(phase)
        if not entry:
            continue
        ours = report["summary"].get(model, {}).get("ours", {}).get(phase, {})
        lead_value = _fmt(ours.get("ms_per_call" if phase == "latency" else "img_per_s"))
        best = entry["best_peer"]
        cells = [model, lead_value, LABELS.get(best, "-"), _x(entry["vs"].get(best))]
        cells += [_x(entry["vs"].get(p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    env, s = report["environment"], report["settings"]
    quiet = report["quiet"]
    lines = [
        "# Training and inference speed on CPU: ours vs mindcv 0.3.0 and timm",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores{' (AVX-512)' if env['avx512'] else ''}, {env['memory_gb']} GB, "
        f"Linux {env['kernel']}; Python {env['python']}, MindSpore {env['mindspore']}, mindcv {env['mindcv'] or '-'}, "
        f"torch {env['torch'] or '-'}, timm {env['timm'] or '-'} (torchvision {env['torchvision'] or 'none'}); "
        f"checkout {env['checkout'] or '-'}; {env['date']}. Load average {env['loadavg_start']} at start, "
        f"{env.get('loadavg_end')} at end (each duel's in the JSON).",
        "",
        f"Protocol: batch {s['batch_size']}, {s['image_size']} px, fixed synthetic tensors. Every variant runs in a "
        f"duel with ours (two processes, built and warmed one after the other: first call + {s['warmup']} untimed), "
        f"then {s['repeats']} rounds alternated ours, peer, ours, peer; a round is {s['steps']} training steps, "
        f"{s['infer_steps']} inference calls at batch {s['infer_batch']} or {s['latency_steps']} at batch 1, the "
        "same for every variant. Ratio = ours' speed / the other's from each pair of rounds (the other's seconds per "
        f"call / ours', > 1: ours faster): median (min-max) over the {s['repeats']} pairs. Best peer: the one of "
        "mindcv + ISA fix, timm fp32, timm channels_last and mindcv as shipped with the lowest median ratio. Ours' "
        "own figures pool its rounds of every duel.",
        "",
        quiet_line(quiet),
    ]
    if s["steps"] < PUBLISHED_MIN_STEPS:
        lines += [
            "",
            f"**Smoke setting ({s['steps']} training steps per round, under {PUBLISHED_MIN_STEPS}): not a result.**",
        ]
    lines += ["", "## Training", ""]
    lines += _ratio_table(report, "train", "ours img/s")
    lines += [
        "",
        "| model | variant | params (M) | framework | ISA | threads | CPU kernels | compile (s) | first step (s) | "
        "ms/step | img/s | CPU ms/step | peak RSS (MB) | processes x rounds x steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, by_variant in report["summary"].items():
        for variant, r in by_variant.items():
            t = r.get("train")
            if not t:
                continue
            compile_s = "-" if t["compile_s"] is None else f"{t['compile_s']:.1f}"
            lines.append(
                f"| {model} | {variant} | {r['params_m']:.2f} | {r['framework']}, {r['memory_format']} | {r['isa']} | "
                f"{r['threads'] or 'default'} | {'yes' if r['cpu_kernels'] else 'no'} | {compile_s} | "
                f"{t['first_step_s']:.1f} | {_fmt(t['ms_per_call'], 0)} | {_fmt(t['img_per_s'])} | "
                f"{_fmt(t['cpu_ms_per_call'], 0)} | {r['peak_rss_mb']:.0f} | "
                f"{r['processes']} x {t['rounds'] // r['processes']} x {t['steps_per_round']} |"
            )
    lines += ["", "## Inference (eval mode)", "", f"Batch {s['infer_batch']} throughput:", ""]
    lines += _ratio_table(report, "infer", "ours img/s")
    lines += ["", "Batch-1 latency (ratio: the other's latency / ours'):", ""]
    lines += _ratio_table(report, "latency", "ours ms")
    lines += [
        "",
        f"| model | variant | b{s['infer_batch']} img/s | b{s['infer_batch']} first call (s) | b1 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for model, by_variant in report["summary"].items():
        for variant, r in by_variant.items():
            infer, latency = r.get("infer"), r.get("latency")
            if infer and latency:
                lines.append(
                    f"| {model} | {variant} | {_fmt(infer['img_per_s'])} | {infer['first_call_s']:.1f} | "
                    f"{_fmt(latency['ms_per_call'])} |"
                )
    pipeline, e2e = report.get("pipeline"), report.get("e2e") or {}
    if pipeline or e2e:
        lines += [
            "",
            "## Real data (ours only; no ratio: nothing else ran this way)",
            "",
        ]
    if e2e:
        lines += [
            "`mindcv_mobile.training.train` (train.py's code path, its defaults but --lr) on the JPEG folder below, "
            "img/s per epoch after the first (which compiles):",
            "",
            "| model | train() img/s | epochs x steps |",
            "|---|---|---|",
        ]
        for model, r in e2e.items():
            if "error" in r:
                lines.append(f"| {model} | error: {r['error'][:160]} | |")
            else:
                lines.append(f"| {model} | {_fmt(r['img_per_s'])} | {r['epochs'] - 1} x {r['steps_per_epoch']} |")
        lines.append("")
    if pipeline:
        if "error" in pipeline:
            lines.append(f"Pipeline: error: {pipeline['error']}")
        else:
            lines.append(
                f"Pipeline alone ({pipeline['images']} JPEGs in {pipeline['data_dir']}, {pipeline['augment']}, "
                f"{pipeline['workers']} workers, {pipeline['batches_per_round']} batches per round): "
                f"{_fmt(pipeline['img_per_s'])} img/s."
            )
    errors = [f"{d['model']} / {d['peer'] or 'ours'}: {d['error']}" for d in report["duels"] if "error" in d]
    if report["skipped"] or errors:
        lines += ["", "## Not measured", ""]
        lines += [f"- {v}: skipped, {why}" for v, why in report["skipped"].items()]
        lines += [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}; must include ours (every other runs in a duel with it)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2, help="calls after the first (compiling) one, not timed")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per duel (and e2e epochs, pipeline rounds)")
    p.add_argument("--steps", type=int, default=10, help="training steps per round, every variant")
    p.add_argument("--infer-steps", type=int, default=10, help="batch --infer-batch inference calls per round")
    p.add_argument("--latency-steps", type=int, default=50, help="batch-1 inference calls per round")
    p.add_argument("--recipe", default="", help="YAML recipe for loss/optimizer/augmentation (default: the model's)")
    p.add_argument(
        "--lr",
        type=float,
        default=0.01,
        help="learning rate of every variant's training, no warmup (the recipes' 0.4-0.8 are meant "
        "for a 600-image batch after a warmup and diverge here; the value does not change a step's work)",
    )
    p.add_argument("--pipeline", dest="pipeline", action="store_true", default=True)
    p.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="skip the data pipeline run")
    p.add_argument("--pipeline-batches", type=int, default=20, help="batches per pipeline round")
    p.add_argument("--e2e", dest="e2e", action="store_true", default=True)
    p.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the entry-point runs on real data")
    p.add_argument("--e2e-steps", type=int, default=10, help="steps per epoch of the entry-point run")
    p.add_argument(
        "--data-dir",
        default="",
        help="ImageFolder root with a train/ split (default: write "
        "--pipeline-images synthetic 500x375 JPEGs to a cache folder)",
    )
    p.add_argument("--pipeline-images", type=int, default=320)
    p.add_argument("--workers", type=int, default=0, help="data workers (0: the package's default for this CPU)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a worker may take for one answer")
    p.add_argument("--out", default="", help="write <out>.json and <out>.md (default: print only)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--model", default="", help=argparse.SUPPRESS)
    p.add_argument("--result-file", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    positive = ("batch_size", "image_size", "infer_batch", "repeats", "steps", "infer_steps", "latency_steps")
    for name in positive + ("e2e_steps", "pipeline_images", "pipeline_batches"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return p, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args.serve:
        return serve(args)
    if args.worker:
        result = worker_main(args)
        with open(args.result_file, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return 0
    models = [m for m in args.models.split(",") if m]
    variants = list(dict.fromkeys(v for v in args.variants.split(",") if v))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "ours" not in variants:
        parser.error(f"--variants must include ours (every other variant runs in a duel with it), got {variants}")
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
    peers = [v for v in variants if v != "ours" and v not in skipped]
    duels, e2e = [], {}
    pipeline = run_worker(args, "pipeline", None) if args.pipeline else None
    for model in models:
        for peer in peers or [None]:
            duels.append(run_duel(args, model, peer))
        if args.e2e:
            e2e[model] = run_worker(args, "e2e", model)
    env["loadavg_end"] = _loadavg()
    report = {
        "environment": env,
        "settings": {
            key: getattr(args, key)
            for key in (
                "models",
                "variants",
                "batch_size",
                "image_size",
                "infer_batch",
                "warmup",
                "repeats",
                "steps",
                "infer_steps",
                "latency_steps",
                "lr",
                "e2e_steps",
                "pipeline_batches",
                "recipe",
            )
        },
        "variants": variants,
        "skipped": skipped,
        "ratios": compute_ratios(duels),
        "summary": summarize_variants(duels, models, variants, args),
        "quiet": quiet_check(duels),
        "pipeline": pipeline,
        "e2e": e2e,
        "duels": duels,
    }
    table = markdown(report)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w", encoding="utf-8") as f:
            f.write(table)
        print(f"wrote {args.out}.json and {args.out}.md")
    failed = [d for d in duels if "error" in d] + [r for r in [pipeline, *e2e.values()] if r and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
