"""Data box: ImageFolder/CIFAR-10 readers, sharding, bad files, transforms, loader, digits tree."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import logging
import os

import mindspore.dataset.vision as vision
import numpy as np
import pytest
from PIL import Image

from mindcv_mobile.data import class_names, create_dataset, create_loader, create_transforms, write_digits_imagefolder
from mindcv_mobile.data.cifar import CIFAR10_CLASSES, CIFAR10_RECORD_BYTES

DATASET_LOGGER = "mindcv_mobile.data"  # the readers log under it (data.image_folder)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows(dataset, epochs: int = 1) -> list[list[tuple[str, int]]]:
    """Per epoch, (md5 of the image column, label) of every row in order."""
    it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    return [[(hashlib.md5(img.tobytes()).hexdigest(), int(label)) for img, label in it] for _ in range(epochs)]


def batches(loader) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))


def gradient(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], -1).astype(np.uint8)


def save_bytes(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- digits tree
@pytest.mark.slow
def test_digits_tree_counts_labels_and_idempotence(digits_root):
    info = write_digits_imagefolder(digits_root, image_size=32)
    assert info["written"] is False  # the fixture already wrote it
    assert (info["train"], info["val"], info["num_classes"]) == (1438, 359, 10)
    for c in range(10):  # stratified: every class has ~20 % of its samples in val
        n_train, n_val = info["per_class"]["train"][str(c)], info["per_class"]["val"][str(c)]
        assert abs(n_val / (n_train + n_val) - 0.2) < 0.01
    assert class_names(digits_root, "train") == [str(c) for c in range(10)]
    with Image.open(
        os.path.join(digits_root, "train", "0", sorted(os.listdir(os.path.join(digits_root, "train", "0")))[0])
    ) as img:
        assert (img.mode, img.size) == ("RGB", (32, 32))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_digits_imagefolder(digits_root, image_size=16)


@pytest.mark.slow
def test_digits_overwrite_and_cli(tmp_path, capsys):
    root = str(tmp_path / "d")
    assert write_digits_imagefolder(root, image_size=8)["written"]
    assert write_digits_imagefolder(root, image_size=12, overwrite=True)["written"]
    with Image.open(os.path.join(root, "val", "5", os.listdir(os.path.join(root, "val", "5"))[0])) as img:
        assert img.size == (12, 12)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".digits")]  # no temp left over
    spec = importlib.util.spec_from_file_location("make_digits", os.path.join(REPO, "scripts", "make_digits.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--root", root, "--image_size", "12"]) == 0
    assert "train 1438 / val 359" in capsys.readouterr().out


# --------------------------------------------------------------------------- reader, sharding
@pytest.mark.slow
def test_imagefolder_sizes_and_labels(digits_root):
    info = write_digits_imagefolder(digits_root, image_size=32)
    for split in ("train", "val"):
        ds = create_dataset("imagenet", digits_root, split, shuffle=False)
        assert ds.get_dataset_size() == info[split]
        (epoch,) = rows(ds)
        labels = [label for _, label in epoch]
        assert labels == sorted(labels)  # unshuffled: class folders in sorted order
        counts = collections.Counter(labels)
        assert {str(c): counts[c] for c in range(10)} == info["per_class"][split]


@pytest.mark.slow
def test_shards_unshuffled_are_disjoint_and_cover_all(digits_root):
    (full,) = rows(create_dataset("imagenet", digits_root, "val", shuffle=False))
    shards = [
        rows(create_dataset("imagenet", digits_root, "val", shuffle=False, num_shards=3, shard_id=k))[0]
        for k in range(3)
    ]
    assert sorted(len(s) for s in shards) == [119, 120, 120]
    assert sum((collections.Counter(s) for s in shards), collections.Counter()) == collections.Counter(full)


@pytest.mark.slow
def test_shuffled_shards_are_seeded_disjoint_equal_and_reshuffled(digits_root):
    def shard(k, seed=7):
        return rows(
            create_dataset("imagenet", digits_root, "val", shuffle=True, seed=seed, num_shards=3, shard_id=k), epochs=2
        )

    (full,) = rows(create_dataset("imagenet", digits_root, "val", shuffle=False))
    shards = [shard(k) for k in range(3)]
    for epoch in range(2):
        parts = [collections.Counter(s[epoch]) for s in shards]
        assert [sum(p.values()) for p in parts] == [359 // 3] * 3  # same steps on every rank
        union = sum(parts, collections.Counter())
        assert not union - collections.Counter(full)  # disjoint: no row in two shards
    assert shards[0][0] != shards[0][1]  # a new permutation each epoch
    assert shard(0) == shards[0]  # same seed, same order
    resumed = create_dataset("imagenet", digits_root, "val", shuffle=True, seed=7, num_shards=3, shard_id=0)
    resumed.sampler.epoch = 1  # how a resumed run continues the order
    assert rows(resumed)[0] == shards[0][1]
    assert shard(0, seed=8) != shards[0]


@pytest.mark.slow
def test_num_samples_caps_each_shard(digits_root):
    ds = create_dataset("imagenet", digits_root, "train", num_samples=10, num_shards=2, shard_id=1)
    assert ds.get_dataset_size() == 10 and len(rows(ds)[0]) == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet21k"), r"unknown dataset name 'imagenet21k'.*cifar10.*imagenet"),
        (dict(num_shards=2), "num_shards and shard_id go together"),
        (dict(num_shards=2, shard_id=2), "0 <= shard_id < num_shards"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_parallel_workers=0), "num_parallel_workers must be >= 1 or None; got 0"),
    ],
)
def test_create_dataset_rejects_bad_arguments(digits_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_dataset(root=digits_root, **kwargs)


def test_missing_root_and_split_name_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        create_dataset("imagenet", str(tmp_path / "nowhere"))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"split folder .*test.* not found.*\['train', 'val'\]"):
        create_dataset("imagenet", str(tmp_path), "test")
    with pytest.raises(ValueError, match="no class subfolders"):
        create_dataset("imagenet", str(tmp_path), "train")


def test_empty_class_warns_and_keeps_label_index(tmp_path, caplog):
    for name in ("a", "b_empty", "c"):
        (tmp_path / "train" / name).mkdir(parents=True)
    for name in ("a", "c"):
        Image.fromarray(gradient()).save(tmp_path / "train" / name / "x.png")
    with caplog.at_level(logging.WARNING, logger=DATASET_LOGGER):
        ds = create_dataset("imagenet", str(tmp_path), "train", shuffle=False)
    assert [r for r in caplog.records if "b_empty" in r.getMessage()]
    assert [label for _, label in rows(ds)[0]] == [0, 2]


def _class_tree(root, split: str, folders, per_class: int = 3) -> dict[str, str]:
    """PNGs under ``root/split/<folder>/``, each with different pixels; md5 of file bytes -> folder."""
    owner = {}
    for c, folder in enumerate(folders):
        for k in range(per_class):
            data = encoded(Image.fromarray(gradient() + (10 * c + k)), "PNG")
            save_bytes(root / split / folder / f"{k}.png", data)
            owner[hashlib.md5(data).hexdigest()] = folder
    return owner


def test_labels_follow_the_given_class_list_when_val_lacks_classes(tmp_path):
    run_classes = ["ant", "bee", "cat", "dog"]
    _class_tree(tmp_path, "train", run_classes)
    owner = _class_tree(tmp_path, "val", ["bee", "dog"])  # no "ant", no "cat"
    ds = create_dataset("imagenet", str(tmp_path), "val", shuffle=False, classes=run_classes)
    assert ds.classes == run_classes
    (epoch,) = rows(ds)  # the image column holds the file bytes: md5 names the folder
    assert len(epoch) == 6
    assert [label for _, label in epoch] == [run_classes.index(owner[md5]) for md5, _ in epoch]
    assert sorted({label for _, label in epoch}) == [1, 3]
    # without the run's list the split labels by its own folders: bee would be 0, dog 1
    own = create_dataset("imagenet", str(tmp_path), "val", shuffle=False)
    assert own.classes == ["bee", "dog"]
    assert sorted({label for _, label in rows(own)[0]}) == [0, 1]


def test_class_folder_outside_the_given_list_is_an_error(tmp_path):
    _class_tree(tmp_path, "val", ["bee", "eel", "yak"], per_class=1)
    known = [f"c{i:02d}" for i in range(20)] + ["bee"]
    with pytest.raises(
        ValueError,
        match=r"^class folders \['eel', 'yak'\] of split 'val' \(.*val\) are not among "
        r"the 21 classes the model knows: \['c00', 'c01', 'c02', 'c03', 'c04', "
        r"\.\.\.\] \(21 in all\)$",
    ):
        create_dataset("imagenet", str(tmp_path), "val", classes=known)
    with pytest.raises(ValueError, match=r"classes lists \['bee'\] more than once"):
        create_dataset("imagenet", str(tmp_path), "val", classes=["bee", "eel", "yak", "bee"])


def test_classes_ride_along_from_dataset_to_loader(digits_root):
    names = [str(c) for c in range(10)]
    for mix in (dict(), dict(mixup=0.2, cutmix=1.0)):  # the mixing path adds one more map
        ds = create_dataset("imagenet", digits_root, "val", num_samples=8)
        assert ds.classes == names == class_names(digits_root, "val")
        loader = create_loader(
            ds, 4, is_training=True, transform=create_transforms("imagenet", 32, True), num_classes=10, **mix
        )
        assert loader.classes == names
        assert len(batches(loader)) == 2
    plain = create_dataset("imagenet", digits_root, "val", num_samples=8).map([vision.Decode()], input_columns="image")
    assert not hasattr(create_loader(plain, 4), "classes")  # nothing to carry over


def test_split_without_any_image_is_an_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no usable images"):
        create_dataset("imagenet", str(tmp_path), "train")


def test_broken_files_are_skipped_with_one_warning_each(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore dumps undecodable input to ./abnormal_image.jpg
    cls = tmp_path / "data" / "train" / "a"
    jpeg, png = encoded(Image.fromarray(gradient()), "JPEG"), encoded(Image.fromarray(gradient()), "PNG")
    save_bytes(cls / "good.jpg", jpeg)
    save_bytes(cls / "good.png", png)
    broken = {
        "trunc.jpg": jpeg[: len(jpeg) // 2],
        "trunc.png": png[: len(png) // 2],
        "html.jpg": b"<html>404 not found</html>",
        "empty.png": b"",
    }
    for name, data in broken.items():
        save_bytes(cls / name, data)
    (cls / "README.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger=DATASET_LOGGER):
        ds = create_dataset("imagenet", str(tmp_path / "data"), "train")
    assert ds.get_dataset_size() == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in broken:
        assert len([m for m in messages if name in m]) == 1, (name, messages)
    assert not [m for m in messages if "README" in m]
    for training in (True, False):
        ds = create_dataset("imagenet", str(tmp_path / "data"), "train", shuffle=training)
        loader = create_loader(
            ds, 2, is_training=training, transform=create_transforms("imagenet", 24, is_training=training)
        )
        ((images, labels),) = batches(loader)
        assert images.shape == (2, 3, 24, 24) and labels.tolist() == [0, 0]
    assert not os.path.exists(tmp_path / "abnormal_image.jpg")


def test_file_vanishing_after_scan_is_replaced_not_fatal(tmp_path, caplog):
    for i in range(3):
        save_bytes(tmp_path / "train" / "a" / f"{i}.png", encoded(Image.fromarray(gradient() + i), "PNG"))
    ds = create_dataset("imagenet", str(tmp_path), "train", shuffle=False)
    os.remove(tmp_path / "train" / "a" / "1.png")
    with caplog.at_level(logging.WARNING, logger=DATASET_LOGGER):
        assert len(rows(ds)[0]) == 3
    assert [r for r in caplog.records if "1.png" in r.getMessage()]


def _special_images() -> dict[str, tuple[str, bytes, np.ndarray]]:
    """class name -> (file name, file bytes, the RGB uint8 array it must decode to)."""
    base = gradient()
    ramp16 = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 80).astype(np.uint16)
    gray16 = np.repeat((ramp16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    cmyk = encoded(Image.fromarray(base).convert("CMYK"), "JPEG", quality=95)
    palette = Image.fromarray(base).quantize(16)
    rgba = np.dstack([base, np.full(base.shape[:2], 100, np.uint8)])
    return {
        "cmyk_jpeg": ("x.jpg", cmyk, np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB"))),
        "gray16_png": ("x.png", encoded(Image.fromarray(ramp16), "PNG"), gray16),
        "gray16_tiff": ("x.tif", encoded(Image.fromarray(ramp16), "TIFF"), gray16),
        "gray_png": ("x.png", encoded(Image.fromarray(base[..., 0]), "PNG"), np.repeat(base[..., :1], 3, axis=2)),
        "palette_png": ("x.png", encoded(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        "rgba_png": ("x.png", encoded(Image.fromarray(rgba), "PNG"), base),
        "webp_lossless": ("x.webp", encoded(Image.fromarray(base), "WEBP", lossless=True), base),
        "png_named_jpeg": ("x.JPEG", encoded(Image.fromarray(base), "PNG"), base),
    }


def test_unusual_images_decode_to_rgb_uint8(tmp_path):
    specials = _special_images()
    for cls, (name, data, _) in specials.items():
        save_bytes(tmp_path / "train" / cls / name, data)
    ds = create_dataset("imagenet", str(tmp_path), "train", shuffle=False)
    ds = ds.map([vision.Decode()], input_columns="image")
    decoded = {}
    for img, label in ds.create_tuple_iterator(num_epochs=1, output_numpy=True):
        decoded[sorted(specials)[int(label)]] = img
    assert sorted(decoded) == sorted(specials)
    for cls, (_, _, expected) in specials.items():
        assert decoded[cls].shape == (24, 32, 3) and decoded[cls].dtype == np.uint8, cls
        assert np.abs(decoded[cls].astype(int) - expected).max() <= 2, cls


# --------------------------------------------------------------------------- CIFAR-10
@pytest.mark.slow
def test_cifar10_binary_reader(tmp_path):
    data_dir = tmp_path / "cifar-10-batches-bin"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, (10000, CIFAR10_RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = np.arange(10000) % 10
    records.tofile(data_dir / "test_batch.bin")
    ds = create_dataset("cifar10", str(tmp_path), "val", shuffle=False, num_samples=3)
    assert ds.classes == list(CIFAR10_CLASSES)
    assert create_dataset("cifar10", str(tmp_path), "val", classes=CIFAR10_CLASSES).classes == list(CIFAR10_CLASSES)
    with pytest.raises(ValueError, match=r"cifar10 labels are fixed to \['airplane', .*got classes=\['cat', 'dog'\]"):
        create_dataset("cifar10", str(tmp_path), "val", classes=["cat", "dog"])
    got = list(ds.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert [int(label) for _, label in got] == [0, 1, 2]
    # binary layout: label byte, then 1024 R, 1024 G, 1024 B bytes; the reader yields HWC
    assert np.array_equal(got[1][0], records[1, 1:].reshape(3, 32, 32).transpose(1, 2, 0))
    loader = create_loader(
        create_dataset("cifar10", str(tmp_path), "test", num_samples=8),
        4,
        is_training=True,
        transform=create_transforms("cifar10", 40, True),
        num_classes=10,
        cutmix=1.0,
    )
    images, labels = batches(loader)[0]
    assert images.shape == (4, 3, 40, 40) and labels.shape == (4, 10)
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        create_dataset("cifar10", str(tmp_path), "train")
    with pytest.raises(ValueError, match="unknown cifar10 split 'dev'"):
        create_dataset("cifar10", str(tmp_path), "dev")
    records[:10].tofile(data_dir / "test_batch.bin")
    with pytest.raises(ValueError, match="has 30730 bytes"):
        create_dataset("cifar10", str(tmp_path), "test")


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("is_training, size", [(True, 32), (True, 48), (False, 32), (False, 40)])
def test_transforms_give_float32_chw(digits_root, is_training, size):
    ds = create_dataset("imagenet", digits_root, "val", num_samples=6)
    loader = create_loader(
        ds,
        4,
        drop_remainder=False,
        is_training=is_training,
        transform=create_transforms("imagenet", size, is_training, vflip=0.5),
    )
    got = batches(loader)
    assert [im.shape for im, _ in got] == [(4, 3, size, size), (2, 3, size, size)]
    assert all(im.dtype == np.float32 and lb.dtype == np.int32 for im, lb in got)


def test_eval_resize_then_center_crop_math(tmp_path):
    # 256x256 image: a 16 px red frame around green. 224 at crop_pct 0.875 resizes to
    # int(224 / 0.875) = 256 (a no-op) and crops the central 224, so no red survives;
    # at crop_pct 1.0 it resizes to 224 and the frame stays.
    img = np.zeros((256, 256, 3), np.uint8)
    img[..., 0] = 255
    img[16:-16, 16:-16] = (0, 255, 0)
    save_bytes(tmp_path / "val" / "a" / "x.png", encoded(Image.fromarray(img), "PNG"))
    identity = dict(mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
    for crop_pct, has_frame in ((0.875, False), (1.0, True)):
        ds = create_dataset("imagenet", str(tmp_path), "val", shuffle=False)
        ops = create_transforms("imagenet", 224, False, crop_pct=crop_pct, **identity)
        ((out, _),) = batches(create_loader(ds, 1, transform=ops))
        assert out.shape == (1, 3, 224, 224)
        assert bool((out[0, 0] > 128).any()) is has_frame, crop_pct


@pytest.mark.parametrize(
    "policy", ["randaug-m9-mstd0.5", "rand-m7-n3-mstd0.5-inc1", "autoaug", "autoaug-cifar10", "trivialaug"]
)
def test_auto_augment_strings_run(digits_root, policy):
    ops = create_transforms("imagenet", 32, True, auto_augment=policy, interpolation="bicubic")
    ds = create_dataset("imagenet", digits_root, "train", num_samples=4)
    ((images, _),) = batches(create_loader(ds, 4, is_training=True, transform=ops))
    assert images.shape == (4, 3, 32, 32) and np.isfinite(images).all()


def test_random_erasing_with_prob_one_erases(tmp_path):
    save_bytes(tmp_path / "train" / "a" / "white.png", encoded(Image.new("RGB", (64, 64), "white"), "PNG"))
    outs = {}
    for re_prob in (0.0, 1.0):
        ops = create_transforms(
            "imagenet", 32, True, scale=(1, 1), ratio=(1, 1), hflip=0, color_jitter=None, re_prob=re_prob
        )
        ds = create_dataset("imagenet", str(tmp_path), "train")
        ((outs[re_prob], _),) = batches(create_loader(ds, 1, transform=ops))
    # white normalises to > 0 everywhere; erasing writes 0 (the mean colour) into a patch
    assert (outs[0.0] > 0).all()
    assert 0.0 < (outs[1.0] == 0).mean() < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(crop_pct=0.0), "crop_pct must be > 0"),
        (dict(image_resize=0), "image_resize"),
        (dict(hflip=1.5), "hflip"),
        (dict(re_prob=-0.1), "re_prob"),
        (dict(scale=(0.5, 0.1)), "scale"),
        (dict(interpolation="lanczos"), r"'lanczos'.*bicubic.*bilinear"),
        (dict(auto_augment="randaug"), "magnitude"),
        (dict(auto_augment="randaug-m11"), "0..10"),
        (dict(auto_augment="randaug-m9-x2"), "randaug-m<magnitude"),
        (dict(auto_augment="augmix-x2"), r"unknown AugMix key 'x'"),
        (dict(auto_augment="autoaugx"), r"unknown auto_augment 'autoaugx'.*autoaug.*trivialaug.*randaug-m.*augmix"),
        (dict(auto_augment="autoaugr-mstd0.5"), r"increasing-posterize.*no MindSpore op"),
        (dict(dataset_name="svhn"), r"'svhn'.*cifar10.*imagenet.*mnist"),
    ],
)
def test_create_transforms_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_transforms(is_training=True, **kwargs)


# --------------------------------------------------------------------------- loader
@pytest.mark.parametrize("mix", [dict(mixup=0.2), dict(cutmix=1.0), dict(mixup=0.2, cutmix=1.0, mixup_prob=0.5)])
def test_mixup_cutmix_give_soft_one_hot_labels(digits_root, mix):
    ds = create_dataset("imagenet", digits_root, "train", num_samples=16)
    loader = create_loader(
        ds,
        8,
        is_training=True,
        transform=create_transforms("imagenet", 32, True),
        num_classes=10,
        label_smoothing=0.1,
        **mix,
    )
    for images, labels in batches(loader):
        assert images.shape == (8, 3, 32, 32)
        assert labels.shape == (8, 10) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert labels.min() >= 0.1 / 10 - 1e-6  # smoothing floor survives mixing


def test_eval_loader_keeps_integer_labels_and_remainder(digits_root):
    ds = create_dataset("imagenet", digits_root, "val", shuffle=False, num_samples=5)
    loader = create_loader(
        ds, 4, drop_remainder=False, transform=create_transforms("imagenet", 32), num_classes=10, mixup=0.2
    )
    got = batches(loader)
    assert [lb.shape for _, lb in got] == [(4,), (1,)] and got[0][1].dtype == np.int32


def test_loader_batch_size_errors(digits_root):
    ds = create_dataset("imagenet", digits_root, "val", num_samples=5)
    with pytest.raises(ValueError, match=r"batch_size=8 is larger than the dataset \(5 samples.*drop_remainder=False"):
        create_loader(ds, 8, drop_remainder=True)
    assert len(batches(create_loader(ds, 8, drop_remainder=False, transform=create_transforms("imagenet", 32)))) == 1
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            create_loader(ds, bad)
    with pytest.raises(ValueError, match="mixup_prob"):
        create_loader(ds, 2, mixup=0.2, mixup_prob=2)
