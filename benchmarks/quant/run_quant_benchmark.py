"""Int8 MobileNetV2 on the digits tree: float vs post-training int8 vs QAT int8, and int8 speed.

    python benchmarks/quant/run_quant_benchmark.py                # all stages; reuses finished runs
    python benchmarks/quant/run_quant_benchmark.py --retrain      # train float and QAT again

Stages (a stage whose run directory holds its best checkpoint is reused unless --retrain):

1. float: MobileNetV2 1.0x from scratch, the QAT recipe's data/augmentation with quant off,
   lr 0.2 cosine, 15 epochs -> runs/mobilenet_v2_digits_float
2. QAT: configs/mobilenetv2_quant/mobilenet_v2_quant_digits_cpu.yaml (fine-tunes stage 1)
3. measurements, all on the 360 val images (64 px):
   - top-1 of the float model (MindSpore, and its BN-folded fp32 ONNX in onnxruntime);
   - top-1 of post-training int8: onnxruntime ``quantize_static`` of the float deploy graph,
     MinMax calibration on the 1,437 train images (eval preprocessing), same int8 format;
   - top-1 of QAT: MindSpore's simulation (validate with quant: true) and the int8 ONNX
     (export_int8_onnx: QAT observer ranges); share of identical top-1 between the two;
   - onnxruntime CPU latency (batch 1) and throughput (batch 32), fp32 vs int8 (best of 20
     alternating rounds), for the digits
     models (64 px) and for MobileNetV2 1.0x at 224 px (ImageNet size; weights random, int8 by
     PTQ on random inputs: speed does not depend on weight values); file sizes.

Writes benchmarks/quant/results.json and results.md. The timings share 2 CPU cores with
whatever else runs; the int8/fp32 ratio, measured interleaved, is the robust number. Training
and evaluation parse MindSpore graph code from the sources: do not edit the package while it runs
(or run it on a copy: PYTHONPATH=/copy/of/repo python benchmarks/quant/run_quant_benchmark.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(ROOT)  # an installed or PYTHONPATH mindcv_mobile comes first

import mindcv_mobile  # noqa: E402,F401  (first: oneDNN ISA cap before MindSpore loads)

# isort: split
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

from mindcv_mobile.build import build_eval_loader, load_eval_network  # noqa: E402
from mindcv_mobile.config import copy_config, load_config  # noqa: E402
from mindcv_mobile.data.digits import write_digits_imagefolder  # noqa: E402
from mindcv_mobile.deploy import (  # noqa: E402
    export_deploy_mindir,
    export_deploy_onnx,
    export_int8_onnx,
    onnx_session,
    quantize_onnx,
    runtime_op_types,
)
from mindcv_mobile.models import create_model  # noqa: E402
from mindcv_mobile.quant import count_fake_quant  # noqa: E402
from mindcv_mobile.tasks import train, validate  # noqa: E402

QAT_RECIPE = os.path.join(ROOT, "configs", "mobilenetv2_quant", "mobilenet_v2_quant_digits_cpu.yaml")
HERE = os.path.dirname(os.path.abspath(__file__))
FLOAT_RUN = "runs/mobilenet_v2_digits_float"
FLOAT_OVERRIDES = {
    "quant": False,
    "ckpt_path": "",
    "ckpt_save_dir": FLOAT_RUN,
    "lr": 0.2,
    "epoch_size": 15,
    "warmup_epochs": 2,
    "decay_epochs": 13,
}


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def qat_config(**overrides):
    cfg = load_config(QAT_RECIPE, overrides)
    cfg.data_dir, cfg.ckpt_save_dir, cfg.ckpt_path = _abs(cfg.data_dir), _abs(cfg.ckpt_save_dir), _abs(cfg.ckpt_path)
    return cfg


def float_config(**overrides):
    cfg = load_config(QAT_RECIPE, {**FLOAT_OVERRIDES, **overrides})
    cfg.data_dir, cfg.ckpt_save_dir = _abs(cfg.data_dir), _abs(cfg.ckpt_save_dir)
    return cfg


def best_checkpoint(run_dir: str, model: str) -> str:
    return os.path.join(run_dir, f"{model}-best.ckpt")


def train_stage(cfg, retrain: bool) -> dict:
    path = best_checkpoint(cfg.ckpt_save_dir, cfg.model)
    if os.path.isfile(path) and not retrain:
        print(f"reusing {path}", flush=True)
        rows = [json.loads(line) for line in open(os.path.join(cfg.ckpt_save_dir, "metrics.jsonl"))]
        return {"checkpoint": path, "history": rows, "train_seconds": None}
    start = time.time()
    result = train(cfg)
    return {"checkpoint": result.best_checkpoint, "history": result.history, "train_seconds": time.time() - start}


def arrays(cfg, split: str):
    """All images (NCHW float32, eval preprocessing) and labels of a split."""
    cfg = copy_config(cfg)
    cfg.val_split = split
    images, labels = [], []
    for image, label in build_eval_loader(cfg, batch_size=64).create_tuple_iterator(output_numpy=True):
        images.append(image)
        labels.append(label if label.ndim == 1 else label.argmax(1))
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def onnx_logits(path: str, images: np.ndarray, batch: int = 64) -> np.ndarray:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def ms_logits(net, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([net(ms.Tensor(images[i : i + batch])).asnumpy() for i in range(0, len(images), batch)])


def _timed_round(session, feed: dict, seconds: float) -> float:
    """ms per call over one round of at least ``seconds`` (and 2 calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        session.run(None, feed)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return 1000.0 * elapsed / calls


def speed(fp32: str, int8: str, image_size: int, seconds: float, rounds: int = 20) -> dict:
    """fp32 vs int8 at batch 1 and 32: ``rounds`` short rounds of each, alternating, so a load
    burst on the shared cores hits both alike. The fastest round is the least disturbed one
    (timeit's rule): it is reported and compared; medians are kept in results.json."""
    sessions = {"fp32": onnx_session(fp32), "int8": onnx_session(int8)}
    out = {}
    for batch, key in ((1, "latency_batch1"), (32, "throughput_batch32")):
        x = np.random.default_rng(0).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
        times = {name: [] for name in sessions}
        for session in sessions.values():
            for _ in range(3):
                session.run(None, {session.get_inputs()[0].name: x})
        for _ in range(rounds):
            for name, session in sessions.items():
                times[name].append(_timed_round(session, {session.get_inputs()[0].name: x}, seconds / (2 * rounds)))
        out[key] = {
            name: {
                "batch": batch,
                "ms_per_call_min": min(t),
                "ms_per_call_median": statistics.median(t),
                "img_per_s_best": 1000.0 * batch / min(t),
            }
            for name, t in times.items()
        }
        out[key]["int8_speedup"] = min(times["fp32"]) / min(times["int8"])
        out[key]["int8_speedup_median"] = statistics.median(times["fp32"]) / statistics.median(times["int8"])
    return out


def sizes(**paths) -> dict:
    return {name: os.path.getsize(path) for name, path in paths.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train the float and QAT models again")
    parser.add_argument("--seconds", type=float, default=12.0, help="timing budget per model pair and batch size")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results stem (.json/.md)")
    args = parser.parse_args(argv)

    qcfg = qat_config()
    write_digits_imagefolder(qcfg.data_dir, image_size=64)
    fcfg = float_config()
    float_run = train_stage(fcfg, args.retrain)
    qcfg = qat_config(ckpt_path=float_run["checkpoint"])
    qat_run = train_stage(qcfg, args.retrain)

    ms.set_context(mode=ms.GRAPH_MODE)
    val_x, val_y = arrays(qcfg, "val")
    train_x, _ = arrays(qcfg, "train")
    work = os.path.join(ROOT, "runs", "quant_benchmark")
    os.makedirs(work, exist_ok=True)
    size = qcfg.image_resize

    # float model: MindSpore validation and its BN-folded fp32 ONNX
    float_eval = validate(float_config(ckpt_path=float_run["checkpoint"]))
    float_net = load_eval_network(float_config(ckpt_path=float_run["checkpoint"]))
    float_onnx = export_deploy_onnx(float_net, os.path.join(work, "float_fp32.onnx"), size)
    float_onnx_top1 = float((onnx_logits(float_onnx, val_x).argmax(1) == val_y).mean())

    # post-training int8 of the float model, calibrated on the train split
    ptq_onnx = quantize_onnx(
        float_onnx,
        os.path.join(work, "float_ptq_int8.onnx"),
        calibration=[train_x[i : i + 64] for i in range(0, len(train_x), 64)],
    )
    ptq_top1 = float((onnx_logits(ptq_onnx, val_x).argmax(1) == val_y).mean())

    # QAT: MindSpore simulation vs the int8 ONNX with the observers' ranges
    qat_cfg = qat_config(ckpt_path=qat_run["checkpoint"])
    qat_eval = validate(qat_cfg)
    qat_net = load_eval_network(qat_cfg)
    simulated = ms_logits(qat_net, val_x)
    exported = export_int8_onnx(qat_net, os.path.join(work, "qat_int8.onnx"), size)
    mindir = export_deploy_mindir(qat_net, os.path.join(work, "qat_deploy.mindir"), size)
    int8_logits = onnx_logits(exported.int8_onnx, val_x)
    qat_fp32_top1 = float((onnx_logits(exported.fp32_onnx, val_x).argmax(1) == val_y).mean())
    agreement = float((int8_logits.argmax(1) == simulated.argmax(1)).mean())

    # speed: the digits models and MobileNetV2 1.0x at ImageNet size
    digits_speed = speed(exported.fp32_onnx, exported.int8_onnx, size, args.seconds)
    big = create_model("mobilenet_v2_100", num_classes=1000)
    big.set_train(False)
    big_fp32 = export_deploy_onnx(big, os.path.join(work, "mobilenet_v2_100_224_fp32.onnx"), 224)
    rng = np.random.default_rng(0)
    big_int8 = quantize_onnx(
        big_fp32,
        os.path.join(work, "mobilenet_v2_100_224_int8.onnx"),
        calibration=[rng.standard_normal((4, 3, 224, 224)).astype(np.float32)],
    )
    big_speed = speed(big_fp32, big_int8, 224, args.seconds)

    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "mindspore": ms.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "load_average_at_end": list(os.getloadavg()),
        },
        "data": {"val_images": int(len(val_y)), "train_images": int(len(train_x)), "image_size": size},
        "model": qcfg.model,
        "fake_quant_points": count_fake_quant(qat_net),
        "float": {
            "checkpoint": float_run["checkpoint"],
            "epochs": fcfg.epoch_size,
            "train_seconds": float_run["train_seconds"],
            "top1_mindspore": float_eval["Top_1_Accuracy"],
            "top1_onnx_fp32_bn_folded": float_onnx_top1,
        },
        "ptq_int8": {"top1_onnxruntime": ptq_top1, "calibration_images": int(len(train_x))},
        "qat": {
            "checkpoint": qat_run["checkpoint"],
            "epochs": qcfg.epoch_size,
            "train_seconds": qat_run["train_seconds"],
            "quant_delay": qcfg.quant_delay,
            "freeze_bn": qcfg.freeze_bn,
            "top1_mindspore_simulation": qat_eval["Top_1_Accuracy"],
            "top1_int8_onnx": float((int8_logits.argmax(1) == val_y).mean()),
            "top1_fp32_deploy_onnx": qat_fp32_top1,
            "int8_vs_simulation_identical_top1": agreement,
            "int8_vs_simulation_max_abs_logit_diff": float(np.abs(int8_logits - simulated).max()),
            "max_abs_logit": float(np.abs(simulated).max()),
            "history": [{k: r.get(k) for k in ("epoch", "loss", "Top_1_Accuracy")} for r in qat_run["history"]],
        },
        "runtime_ops_int8": dict(runtime_op_types(exported.int8_onnx)),
        "speed_digits_64px": digits_speed,
        "speed_mobilenet_v2_100_224px": big_speed,
        "file_bytes": {
            **sizes(
                qat_checkpoint=qat_run["checkpoint"],
                float_checkpoint=float_run["checkpoint"],
                deploy_mindir=mindir,
                fp32_onnx=exported.fp32_onnx,
                int8_onnx=exported.int8_onnx,
                ptq_int8_onnx=ptq_onnx,
            ),
            "mobilenet_v2_100_224_fp32_onnx": os.path.getsize(big_fp32),
            "mobilenet_v2_100_224_int8_onnx": os.path.getsize(big_int8),
        },
    }
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(results))
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    q, fb = r["qat"], r["file_bytes"]
    lines = [
        f"# Int8 MobileNetV2 ({r['model']}) on the digits tree ({r['data']['val_images']} val images, "
        f"{r['data']['image_size']} px)",
        "",
        f"Measured {r['date']} on {r['machine']['cpu_count']} CPU cores shared with other jobs (load average at the "
        f"end {', '.join(f'{v:.1f}' for v in r['machine']['load_average_at_end'])}); MindSpore "
        f"{r['machine']['mindspore']}, onnxruntime {r['machine']['onnxruntime']}. QAT quant points: "
        f"{r['fake_quant_points']['activations']} activations, {r['fake_quant_points']['weights']} weight tensors.",
        "",
        "| model | top-1 (val) |",
        "|---|---|",
        f"| float, MindSpore ({r['float']['epochs']} epochs from scratch) | {pct(r['float']['top1_mindspore'])} |",
        f"| float, BN folded, fp32 ONNX (onnxruntime) | {pct(r['float']['top1_onnx_fp32_bn_folded'])} |",
        f"| post-training int8 (onnxruntime static, {r['ptq_int8']['calibration_images']} calibration images) | "
        f"{pct(r['ptq_int8']['top1_onnxruntime'])} |",
        f"| QAT ({q['epochs']} epochs), MindSpore simulation | {pct(q['top1_mindspore_simulation'])} |",
        f"| QAT int8 ONNX (onnxruntime int8 kernels) | {pct(q['top1_int8_onnx'])} |",
        f"| QAT deploy graph, fp32 ONNX (int8-grid weights, float activations) | {pct(q['top1_fp32_deploy_onnx'])} |",
        "",
        f"int8 ONNX vs MindSpore QAT simulation: identical top-1 on {pct(q['int8_vs_simulation_identical_top1'])} of "
        f"the val images (target >= 99%); max |logit difference| {q['int8_vs_simulation_max_abs_logit_diff']:.3g} "
        f"(max |logit| {q['max_abs_logit']:.3g}).",
        "",
        f"Kernels onnxruntime runs for the int8 model: "
        f"{', '.join(f'{k} x{v}' for k, v in sorted(r['runtime_ops_int8'].items()))}.",
        "",
        "onnxruntime CPU, best of 20 alternating rounds per model (medians in results.json):",
        "",
        "| onnxruntime CPU | fp32 | int8 | int8 speed-up (best / median rounds) |",
        "|---|---|---|---|",
    ]
    for title, key in (
        ("digits model, 64 px", "speed_digits_64px"),
        ("MobileNetV2 1.0x, 224 px", "speed_mobilenet_v2_100_224px"),
    ):
        s = r[key]
        b1, b32 = s["latency_batch1"], s["throughput_batch32"]
        lines.append(
            f"| {title}: latency, batch 1 (ms) | {b1['fp32']['ms_per_call_min']:.2f} | "
            f"{b1['int8']['ms_per_call_min']:.2f} | {b1['int8_speedup']:.2f}x / "
            f"{b1['int8_speedup_median']:.2f}x |"
        )
        lines.append(
            f"| {title}: throughput, batch 32 (img/s) | {b32['fp32']['img_per_s_best']:.0f} | "
            f"{b32['int8']['img_per_s_best']:.0f} | {b32['int8_speedup']:.2f}x / "
            f"{b32['int8_speedup_median']:.2f}x |"
        )
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
    lines += [
        "",
        "| file | size |",
        "|---|---|",
        f"| QAT checkpoint (weights, BN statistics, observer ranges, optimizer state) | {mb(fb['qat_checkpoint'])} |",
        f"| deploy MINDIR (BN folded, fp32 storage) | {mb(fb['deploy_mindir'])} |",
        f"| fp32 ONNX (digits) | {mb(fb['fp32_onnx'])} |",
        f"| int8 ONNX (digits, QAT) | {mb(fb['int8_onnx'])} ({fb['fp32_onnx'] / fb['int8_onnx']:.2f}x smaller) |",
        f"| fp32 / int8 ONNX, MobileNetV2 1.0x 224 px 1000 classes | {mb(fb['mobilenet_v2_100_224_fp32_onnx'])} / "
        f"{mb(fb['mobilenet_v2_100_224_int8_onnx'])} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
