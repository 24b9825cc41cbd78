"""CIFAR-100 and MNIST readers (and CIFAR-10 in mindcv's folder layout) on files written here in
the official formats: pixels, labels and classes against the numpy arrays written, shards."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from mindcv_mobile.data import (
    CIFAR100_CLASSES,
    class_names,
    create_dataset,
    create_loader,
    create_transforms,
)
from mindcv_mobile.data.cifar import CIFAR10_CLASSES

CIFAR100_TEST_ROWS = 10000  # MindSpore's reader takes whole official files only


def cifar_records(n: int, label_bytes: int, seed: int) -> np.ndarray:
    """Random records; the first two R bytes hold the row index so a row can be told apart."""
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, 256, (n, label_bytes + 3072), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, 20 if label_bytes == 2 else 10, n)
    if label_bytes == 2:
        rec[:, 1] = rng.integers(0, 100, n)
    rec[:, label_bytes] = np.arange(n) % 256
    rec[:, label_bytes + 1] = np.arange(n) // 256
    return rec


def hwc(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def read_all(dataset, epochs: int = 1):
    """Per epoch: (images, labels) stacked in reading order."""
    it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    out = []
    for _ in range(epochs):
        rows = list(it)
        out.append((np.stack([r[0] for r in rows]), np.array([int(r[1]) for r in rows])))
    return out


def cifar_ids(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 1, 0].astype(int)


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c100")
    (root / "cifar-100-binary").mkdir()
    rec = cifar_records(CIFAR100_TEST_ROWS, 2, seed=11)
    rec.tofile(root / "cifar-100-binary" / "test.bin")
    return str(root), rec


# --------------------------------------------------------------------------- CIFAR-100
def test_cifar100_pixels_fine_labels_and_classes(cifar100_root, tmp_path):
    root, rec = cifar100_root
    ds = create_dataset("cifar100", root, "test", shuffle=False)
    assert ds.get_col_names() == ["image", "label"]
    ((images, labels),) = read_all(ds)
    assert images.dtype == np.uint8 and np.array_equal(images, hwc(rec[:, 2:]))
    assert np.array_equal(labels, rec[:, 1]) and not np.array_equal(labels, rec[:, 0])  # fine, not coarse
    # Without fine_label_names.txt: the official names, in the file's (alphabetical) order.
    names = ds.classes
    assert len(names) == 100 and names == sorted(names) and names[:3] == ["apple", "aquarium_fish", "baby"]
    assert names[-3:] == ["wolf", "woman", "worm"] and list(CIFAR100_CLASSES) == names
    assert class_names(root, name="cifar100") == names
    assert create_dataset("cifar100", root, "val", classes=names).classes == names
    with pytest.raises(ValueError, match=r"cifar100 labels are fixed to \['apple', .*got classes=\['a', 'b'\]"):
        create_dataset("cifar100", root, "val", classes=["a", "b"])
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 binary files \['train.bin'\] not found"):
        create_dataset("cifar100", root, "train")
    with pytest.raises(ValueError, match="unknown cifar100 split 'dev'"):
        create_dataset("cifar100", root, "dev")


def test_cifar100_names_file_and_bad_size(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rec = cifar_records(CIFAR100_TEST_ROWS, 2, seed=2)
    rec.tofile(folder / "test.bin")
    names = [f"n{i:03d}" for i in range(100)]
    (folder / "fine_label_names.txt").write_text("\n".join(names) + "\n\n")
    ds = create_dataset("cifar100", str(tmp_path), "test", num_samples=3, shuffle=False)
    assert ds.classes == names and class_names(str(tmp_path), name="cifar100") == names
    (folder / "fine_label_names.txt").write_text("only\ntwo\n")
    with pytest.raises(ValueError, match="lists 2 names; CIFAR-100 has 100"):
        create_dataset("cifar100", str(tmp_path), "test")
    (folder / "fine_label_names.txt").unlink()
    rec[:5].tofile(folder / "test.bin")
    with pytest.raises(ValueError, match=r"has 15370 bytes; a CIFAR-100 binary file test.bin has 30740000"):
        create_dataset("cifar100", str(tmp_path), "test")


def test_cifar100_shards_cover_every_row_once_and_order_is_seeded(cifar100_root):
    root, rec = cifar100_root
    parts = [
        cifar_ids(read_all(create_dataset("cifar100", root, "test", shuffle=False, num_shards=3, shard_id=k))[0][0])
        for k in range(3)
    ]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(CIFAR100_TEST_ROWS))
    assert np.array_equal(parts[1], np.arange(1, CIFAR100_TEST_ROWS, 3))

    def shard(k, epochs=2, **kw):
        return [
            cifar_ids(images)
            for images, _ in read_all(
                create_dataset("cifar100", root, "test", seed=7, num_shards=2, shard_id=k, **kw), epochs
            )
        ]

    a, b = shard(0), shard(1)
    for epoch in range(2):  # disjoint halves, each row's label stays its own
        assert len(a[epoch]) == len(b[epoch]) == CIFAR100_TEST_ROWS // 2
        assert not set(a[epoch]) & set(b[epoch])
    assert not np.array_equal(a[0], a[1])  # reshuffled every epoch
    assert all(np.array_equal(x, y) for x, y in zip(shard(0), a))  # same (seed, epoch), same order
    assert np.array_equal(shard(0, epochs=1, epoch=1)[0], a[1])  # a resumed run continues the order
    ((images, labels),) = read_all(create_dataset("cifar100", root, "test", seed=7, num_shards=2, shard_id=0))
    assert np.array_equal(labels, rec[cifar_ids(images), 1])


def test_cifar10_files_directly_in_root(tmp_path):
    """mindcv's tutorials point root at the folder that holds the .bin files."""
    rec = cifar_records(10000, 1, seed=4)
    rec.tofile(tmp_path / "test_batch.bin")
    ds = create_dataset("cifar10", str(tmp_path), "test", shuffle=False, num_samples=50)
    ((images, labels),) = read_all(ds)
    assert np.array_equal(images, hwc(rec[:50, 1:])) and np.array_equal(labels, rec[:50, 0])
    assert ds.classes == list(CIFAR10_CLASSES)


# --------------------------------------------------------------------------- MNIST
def write_idx(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def mnist_arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.mark.parametrize("layout", ["root", "MNIST/raw"])
def test_mnist_pixels_labels_classes_and_shards(tmp_path, layout):
    folder = tmp_path if layout == "root" else tmp_path / "MNIST" / "raw"
    train, test = mnist_arrays(23, seed=1), mnist_arrays(11, seed=2)
    write_idx(folder, "train", *train)
    write_idx(folder, "t10k", *test)
    root = str(tmp_path)
    for split, (images, labels) in (("train", train), ("val", test), ("test", test)):
        ds = create_dataset("mnist", root, split, shuffle=False)
        ((got_images, got_labels),) = read_all(ds)
        assert got_images.shape == (len(labels), 28, 28, 3) and got_images.dtype == np.uint8
        assert np.array_equal(got_images, np.repeat(images[..., None], 3, axis=-1))  # grey in every channel
        assert np.array_equal(got_labels, labels)
        assert ds.classes == [str(d) for d in range(10)]
    assert class_names(root, name="mnist") == [str(d) for d in range(10)]

    index = {hashlib.md5(img.tobytes()).hexdigest(): i for i, img in enumerate(train[0])}

    def ids(k, shards, **kw):
        ((images, labels),) = read_all(create_dataset("mnist", root, "train", num_shards=shards, shard_id=k, **kw))
        rows = [index[hashlib.md5(img[..., 0].tobytes()).hexdigest()] for img in images]
        assert np.array_equal(labels, train[1][rows])
        return rows

    parts = [ids(k, 4, shuffle=False) for k in range(4)]
    assert sorted(sum(parts, [])) == list(range(23))  # every row exactly once
    shuffled = [ids(k, 2, shuffle=True, seed=3) for k in range(2)]
    assert len(shuffled[0]) == len(shuffled[1]) == 11 and not set(shuffled[0]) & set(shuffled[1])
    assert ids(0, 2, shuffle=True, seed=3) == shuffled[0]


def test_mnist_feeds_the_decoded_image_transforms(tmp_path):
    images, labels = mnist_arrays(8, seed=6)
    write_idx(tmp_path, "t10k", images, labels)
    loader = create_loader(
        create_dataset("mnist", str(tmp_path), "test", shuffle=False),
        4,
        drop_remainder=False,
        transform=create_transforms("mnist", 32, is_training=False, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)),
        num_classes=10,
    )
    batch, batch_labels = next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32
    assert np.array_equal(batch_labels, labels[:4])
    assert np.allclose(batch[:, 0], batch[:, 2])  # the three channels carry the same grey


def test_mnist_rejects_missing_or_malformed_files(tmp_path):
    images, labels = mnist_arrays(5, seed=0)
    with pytest.raises(FileNotFoundError, match=r"MNIST files \['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'\]"):
        create_dataset("mnist", str(tmp_path), "test")
    write_idx(tmp_path, "t10k", images, labels)
    path = tmp_path / "t10k-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="has 3926 bytes; its header promises 3936 .*truncated"):
        create_dataset("mnist", str(tmp_path), "test")
    path.write_bytes(b"\x1f\x8b" + data[2:])  # still gzipped, say
    with pytest.raises(ValueError, match="is not an MNIST idx file"):
        create_dataset("mnist", str(tmp_path), "test")
    write_idx(tmp_path, "t10k", images, labels[:4])
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data)
    with pytest.raises(ValueError, match="holds 5 images but .* 4 labels"):
        create_dataset("mnist", str(tmp_path), "test")
    with pytest.raises(ValueError, match=r"mnist labels are fixed to \['0', "):
        create_dataset("mnist", str(tmp_path), "test", classes=["a"])
