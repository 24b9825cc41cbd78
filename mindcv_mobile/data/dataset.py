"""create_dataset: one split, one shard of a named dataset as ("image", "label") rows that
carry their class list (``dataset.classes``), so no caller has to recompute it.

The readers live with their formats: ImageFolder trees in ``image_folder.py`` (file probing in
``image_files.py``), CIFAR-10/100 binary files in ``cifar.py``, MNIST idx files in ``mnist.py``; all
shard with ``sampler.ShardSampler``. ``DATASET_DOWNLOADS`` fetches the public ones (``download.py``).
"""

from __future__ import annotations

from typing import Sequence

import mindspore.dataset as ds

from ..host import data_workers
from .cifar import CIFAR10_CLASSES, cifar100_classes, download_cifar, read_cifar10, read_cifar100
from .image_folder import folder_classes, read_image_folder
from .mnist import MNIST_CLASSES, download_mnist, read_mnist
from .sampler import check_sharding

# name -> reader(root, split, sampler_args, workers, classes) -> (dataset, class list in label order)
DATASET_READERS = {
    "imagenet": read_image_folder,  # any ImageFolder tree <root>/<split>/<class>/<images>
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "mnist": read_mnist,
}
# name -> download(root, split) -> True when files were fetched; only the public data sets
DATASET_DOWNLOADS = {
    "cifar10": lambda root, split=None: download_cifar("cifar10", root, split),
    "cifar100": lambda root, split=None: download_cifar("cifar100", root, split),
    "mnist": download_mnist,
}


def _reader_key(name: str) -> str:
    key = str(name).lower()
    if key not in DATASET_READERS:
        raise ValueError(f"unknown dataset name {name!r}; choose one of {sorted(DATASET_READERS)}")
    return key


def class_names(root: str, split: str = "train", name: str = "imagenet") -> list[str]:
    """Class names in label order without building a dataset: the sorted class folders of
    ``<root>/<split>`` for an ImageFolder tree, the fixed names of "cifar10" and "mnist" ("0".."9"),
    and for "cifar100" its fine_label_names.txt (the official list when absent)."""
    key = _reader_key(name)
    if key == "cifar10":
        return list(CIFAR10_CLASSES)
    if key == "cifar100":
        return cifar100_classes(root)
    if key == "mnist":
        return list(MNIST_CLASSES)
    return folder_classes(root, split)


def download_dataset(name: str, root: str, split: str | None = None) -> bool:
    """Fetch the official files of a public data set ("cifar10", "cifar100", "mnist") into ``root``
    unless the files of ``split`` (None: every split) are already there; True when it fetched.

    Call it from one process of a distributed run (rank 0) and let the others wait: each file
    lands by an atomic rename, so a concurrent call is safe but downloads the same bytes twice.
    """
    key = _reader_key(name)
    if key not in DATASET_DOWNLOADS:
        raise ValueError(
            f"dataset {name!r} cannot be downloaded (no public archive); place it under "
            f"{root!r} and set download=False (dataset_download: False); downloadable: "
            f"{sorted(DATASET_DOWNLOADS)}"
        )
    return DATASET_DOWNLOADS[key](root, split)


def create_dataset(
    name: str = "imagenet",
    root: str = "./",
    split: str = "train",
    shuffle: bool = True,
    num_samples: int | None = None,
    num_shards: int | None = None,
    shard_id: int | None = None,
    num_parallel_workers: int | None = None,
    seed: int | None = None,
    epoch: int = 0,
    classes: Sequence[str] | None = None,
    aug_repeats: int = 0,
    download: bool = False,
):
    """A ``mindspore.dataset`` with columns ("image", "label") for one split, one shard, and a
    ``classes`` attribute: the class names in label order.

    Args:
        name: one of ``DATASET_READERS``: "imagenet" (any ImageFolder tree, images as encoded
            bytes for ``create_transforms("imagenet")``), "cifar10" / "cifar100" (binary versions
            under ``<root>/cifar-10-batches-bin`` / ``<root>/cifar-100-binary`` or in ``root``
            itself, images as decoded 32x32x3 uint8) or "mnist" (idx files in ``root`` or
            ``<root>/MNIST/raw``, images as decoded 28x28x3 uint8, grey in every channel).
        root: dataset root; split: sub-folder ("imagenet") or train/val/test (the others; val
            and test both read the official test files).
        shuffle: reshuffle every epoch; every shard uses the same permutation, so shards stay
            disjoint. With shuffle=False the shards also cover every sample.
        num_samples: at most this many samples per shard (e.g. for a quick run).
        num_shards, shard_id: this process's part of the data (rank, group size).
        num_parallel_workers: reader workers, through ``host.data_workers`` (8 when not given,
            at most one per core this process may use).
        seed: shuffle seed; None -> ``mindspore.dataset.config.get_seed()`` so every rank agrees.
        epoch: the epoch the first iteration is; the shuffle order of epoch e depends only on
            (seed, e), so a resumed run sees the same order as an uninterrupted one.
        classes: the run's class list. An ImageFolder split is then labelled by each folder's
            position in it (a split lacking some classes keeps the others' labels) and a folder
            not in it is an error; for the other data sets it must be their fixed class list.
            None: the split's own sorted class folders.
        aug_repeats: repeated augmentation (mindcv's num_aug_repeats): with r > 1 an epoch reads
            about len(split) / r samples r times each, the copies on different shards, about
            len(split) reads in all (see ``sampler.ShardSampler``); 0 or 1 = off.
        download: fetch the official files of "cifar10", "cifar100" or "mnist" into ``root`` first
            when this split's files are missing (``download_dataset``; mindcv's dataset_download);
            an error for "imagenet".
    """
    key = _reader_key(name)
    if num_samples is not None and int(num_samples) <= 0:
        raise ValueError(f"num_samples must be a positive int or None; got {num_samples!r}")
    num_shards, shard_id = check_sharding(num_shards, shard_id)
    if num_parallel_workers is not None and int(num_parallel_workers) < 1:
        raise ValueError(f"num_parallel_workers must be >= 1 or None; got {num_parallel_workers!r}")
    if seed is None:
        seed = ds.config.get_seed()
    if download:
        download_dataset(key, root, split)
    sampler_args = dict(
        shuffle=bool(shuffle),
        num_samples=None if num_samples is None else int(num_samples),
        num_shards=num_shards,
        shard_id=shard_id,
        seed=int(seed),
        aug_repeats=aug_repeats,
    )
    dataset, label_names = DATASET_READERS[key](root, split, sampler_args, data_workers(num_parallel_workers), classes)
    dataset.classes = label_names
    dataset.sampler.epoch = int(epoch)
    return dataset
