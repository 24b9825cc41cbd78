"""One epoch of training on a small digits tree for each option mindcv users bring: the new
optimizers, schedulers, augmentations, gradient accumulation, repeated augmentation, layer-wise
LR decay, stochastic depth and the CIFAR-100 / MNIST readers (through dataset_download from a
local HTTP server). Each run is a real train() call: data pipeline, train step, checkpoint.

Numbers each run is checked against: the LR the monitor logged for the last step against
mindcv 0.3.0's create_scheduler (schedulers), the number of optimizer steps the LR position shows
(accumulation), the images the epoch held (repeated augmentation).
"""

import http.server
import json
import os
import shutil
import struct
import threading

import mindspore as ms
import numpy as np
import pytest

from mindcv_mobile.config import load_config
from mindcv_mobile.download import DOWNLOAD_BASE_ENV
from mindcv_mobile.tasks import train

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "mobilenetv3", "mobilenet_v3_small_digits_cpu.yaml")
TRAIN_PER_CLASS, BATCH = 8, 16  # 80 images: 5 steps per epoch


@pytest.fixture(scope="module")
def tiny(digits_root, tmp_path_factory):
    """8 training and 2 validation images per digit, 32 px."""
    root = tmp_path_factory.mktemp("tiny")
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", 2)):
        for cls in sorted(os.listdir(os.path.join(digits_root, split))):
            os.makedirs(root / split / cls)
            for name in sorted(os.listdir(os.path.join(digits_root, split, cls)))[:per_class]:
                shutil.copy(os.path.join(digits_root, split, cls, name), root / split / cls / name)
    return str(root)


def one_epoch(data_dir, run_dir, **overrides):
    values = dict(
        data_dir=data_dir,
        ckpt_save_dir=str(run_dir),
        model="mobilenet_v1_025",
        image_resize=32,
        epoch_size=1,
        warmup_epochs=0,
        batch_size=BATCH,
        val_while_train=False,
        mode=1,
    )
    values.update(overrides)
    result = train(load_config(RECIPE, values))
    (row,) = result.history
    assert np.isfinite(row["loss"]), row
    assert os.path.isfile(result.last_checkpoint)
    return row


@pytest.mark.parametrize("opt", ["lion", "nadam", "adan", "lamb", "adagrad", "nesterov"])
def test_each_new_optimizer_trains_an_epoch_in_graph_mode(tiny, tmp_path, opt):
    lr = {"lion": 1e-4, "adagrad": 0.01}.get(opt, 1e-3)
    row = one_epoch(tiny, tmp_path, opt=opt, lr=lr, mode=0, weight_decay=1e-4)
    assert row["global_step"] == 5


@pytest.mark.parametrize(
    "scheduler, extra",
    [
        ("warmup_cosine_decay", {"warmup_epochs": 1, "epoch_size": 2, "decay_epochs": 1}),
        ("polynomial_decay", {"epoch_size": 2, "decay_rate": 2.0}),
        ("one_cycle", {"epoch_size": 2}),
        ("cyclic", {"epoch_size": 2, "num_cycles": 2}),
        ("step_decay", {"epoch_size": 2, "decay_epochs": 1, "decay_rate": 0.5}),
    ],
)
def test_each_mindcv_scheduler_trains_with_mindcv_lrs(tiny, tmp_path, scheduler, extra):
    from mindcv.scheduler import create_scheduler

    values = dict(scheduler=scheduler, lr=0.05, min_lr=1e-4, **extra)
    cfg = load_config(RECIPE, dict(values, epoch_size=values.get("epoch_size", 1)))
    result = train(
        load_config(
            RECIPE,
            dict(values, data_dir=tiny, ckpt_save_dir=str(tmp_path), model="mobilenet_v1_025", image_resize=32)
            | dict(batch_size=BATCH, val_while_train=False, mode=1, warmup_epochs=values.get("warmup_epochs", 0)),
        )
    )
    reference = create_scheduler(
        5,
        scheduler=scheduler,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        warmup_epochs=int(values.get("warmup_epochs", 0)),
        warmup_factor=cfg.warmup_factor,
        decay_epochs=int(cfg.decay_epochs),
        decay_rate=cfg.decay_rate,
        num_epochs=cfg.epoch_size,
        num_cycles=cfg.num_cycles,
        cycle_decay=cfg.cycle_decay,
    )
    logged = [row["lr"] for row in result.history]  # the LR of each epoch's last step
    assert logged == pytest.approx([reference[5 * e - 1] for e in range(1, cfg.epoch_size + 1)], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    "augment",
    [
        {"auto_augment": "augmix-m3-w3"},
        {"auto_augment": "autoaug-mstd0.5"},
        {"color_jitter": [0.4, 0.3, 0.2, 0.05], "re_prob": 1.0, "re_value": "random"},
        {"re_prob": 0.5, "re_value": [124, 116, 104], "mixup": 0.2, "cutmix": 1.0},
    ],
    ids=["augmix", "autoaug-mstd", "jitter-list-erase-random", "erase-rgb-mix"],
)
def test_each_augmentation_trains_an_epoch(tiny, tmp_path, augment):
    one_epoch(tiny, tmp_path, **augment)


def test_gradient_accumulation_trains_with_the_lr_counting_batches(tiny, tmp_path, caplog):
    row = one_epoch(tiny, tmp_path, gradient_accumulation_steps=2, mode=0)
    # 5 batches: 2 updates, and the fifth batch's share waits in the buffers (kept in the checkpoint).
    assert row["global_step"] == 5
    state = ms.load_checkpoint(os.path.join(tmp_path, "mobilenet_v1_025-1_5.ckpt"))
    assert int(state["accumulation.count"].asnumpy()) == 1
    assert int(state["global_step"].asnumpy()[0]) == 5


def test_repeated_augmentation_epoch_holds_each_drawn_image_three_times(tiny, tmp_path):
    row = one_epoch(tiny, tmp_path, aug_repeats=3)
    # One device: the epoch keeps the first ceil(80 / 1) = 80 of the repeated list (mindcv's rule).
    assert row["global_step"] == 80 // BATCH


def test_layer_decay_and_drop_path_train_an_epoch(tiny, tmp_path):
    one_epoch(tiny, tmp_path / "v2", model="mobilenet_v2_035", layer_decay=0.7, drop_path_rate=0.1, mode=0)


def _write_mnist(folder, n: int, seed: int) -> None:
    """Gzipped idx files in MNIST's official format: n training and n / 4 test images."""
    import gzip

    rng = np.random.default_rng(seed)
    for prefix, count in (("train", n), ("t10k", n // 4)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        blobs = {
            f"{prefix}-images-idx3-ubyte.gz": struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte.gz": struct.pack(">II", 2049, count) + labels.tobytes(),
        }
        for name, raw in blobs.items():
            (folder / name).write_bytes(gzip.compress(raw))


def test_mnist_downloaded_from_a_local_mirror_trains_an_epoch(tmp_path, monkeypatch):
    from mindcv_mobile.data import mnist

    served = tmp_path / "served"
    served.mkdir()
    _write_mnist(served, 80, seed=0)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(DOWNLOAD_BASE_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
        # The official hashes would refuse synthetic files: this run checks the plumbing, not them.
        monkeypatch.setattr(mnist, "MNIST_FILES", dict.fromkeys(mnist.MNIST_FILES))
        row = one_epoch(
            str(tmp_path / "mnist"), tmp_path / "run", dataset="mnist", dataset_download=True, batch_size=16
        )
    finally:
        server.shutdown()
    assert row["global_step"] == 5
    with open(tmp_path / "run" / "classes.json", encoding="utf-8") as f:
        assert json.load(f) == [str(d) for d in range(10)]
