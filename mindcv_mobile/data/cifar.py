"""CIFAR-10 and CIFAR-100, binary versions, read by MindSpore's C++ readers.

The split's files are looked for in the extracted archive's folder first, then in ``root``
itself (mindcv passes that folder as the root):
    <root>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin   1 label byte + 3072 pixels
    <root>/cifar-100-binary/{train,test}.bin                      coarse + fine label byte + 3072 pixels
Pixels are stored as 1024 R, 1024 G, then 1024 B bytes; the readers yield 32x32x3 uint8 (HWC).
CIFAR-100 uses its 100 fine labels, named by ``fine_label_names.txt`` beside the files.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import mindspore.dataset as ds

from ..download import ensure_file, extract
from .sampler import ShardSampler

CIFAR_PIXELS = 32 * 32 * 3
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_RECORD_BYTES = 1 + CIFAR_PIXELS
CIFAR10_FILE_RECORDS = 10000
CIFAR10_SPLITS = {
    "train": ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
    "val": ("test", ["test_batch.bin"]),
    "test": ("test", ["test_batch.bin"]),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_DIR = "cifar-100-binary"
CIFAR100_RECORD_BYTES = 2 + CIFAR_PIXELS
CIFAR100_SPLITS = {
    "train": ("train", ["train.bin"]),
    "val": ("test", ["test.bin"]),
    "test": ("test", ["test.bin"]),
}
CIFAR100_NAMES_FILE = "fine_label_names.txt"
# The fine labels in label order, as the archive's fine_label_names.txt lists them.
CIFAR100_CLASSES = tuple(
    """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm
""".split()
)


class CifarFormat(NamedTuple):
    title: str
    folder: str  # the archive's top folder
    record_bytes: int
    file_records: dict  # MindSpore's readers need each file whole: name -> its record count
    splits: dict  # split -> (MindSpore usage, files)
    url: str
    sha256: str  # of the archive


CIFAR_FORMATS = {
    "cifar10": CifarFormat(
        "CIFAR-10",
        CIFAR10_DIR,
        CIFAR10_RECORD_BYTES,
        {**{f"data_batch_{i}.bin": CIFAR10_FILE_RECORDS for i in range(1, 6)}, "test_batch.bin": CIFAR10_FILE_RECORDS},
        CIFAR10_SPLITS,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    ),
    "cifar100": CifarFormat(
        "CIFAR-100",
        CIFAR100_DIR,
        CIFAR100_RECORD_BYTES,
        {"train.bin": 50000, "test.bin": 10000},
        CIFAR100_SPLITS,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    ),
}


def cifar_dir(root: str, name: str, files: Sequence[str] | None = None) -> str | None:
    """The folder holding ``files`` (default: every file of the data set): ``<root>/<archive
    folder>`` or ``root`` itself; None when neither has them all."""
    fmt = CIFAR_FORMATS[name]
    files = list(fmt.file_records) if files is None else list(files)
    for folder in (os.path.join(root, fmt.folder), root):
        if all(os.path.isfile(os.path.join(folder, f)) for f in files):
            return folder
    return None


def cifar100_classes(root: str) -> list[str]:
    """The fine label names: from ``fine_label_names.txt`` next to the data when present."""
    for folder in (os.path.join(root, CIFAR100_DIR), root):
        path = os.path.join(folder, CIFAR100_NAMES_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
            if len(names) != 100:
                raise ValueError(f"{path} lists {len(names)} names; CIFAR-100 has 100 fine labels")
            return names
    return list(CIFAR100_CLASSES)


def _cifar_files(root: str, name: str, split: str, classes, label_names: list[str]) -> tuple[str, str, int]:
    """(data folder, MindSpore usage, rows) of a split, after checking every file's size."""
    fmt = CIFAR_FORMATS[name]
    if split not in fmt.splits:
        raise ValueError(f"unknown {name} split {split!r}; choose one of {sorted(fmt.splits)}")
    if classes is not None and list(classes) != label_names:
        raise ValueError(f"{name} labels are fixed to {label_names}; got classes={list(classes)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"dataset root {root!r} does not exist; expected <root>/{fmt.folder}/ ({fmt.title} binary version)"
        )
    usage, files = fmt.splits[split]
    data_dir = cifar_dir(root, name, files)
    if data_dir is None:
        data_dir = os.path.join(root, fmt.folder)
        missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
        raise FileNotFoundError(
            f"{fmt.title} binary files {missing} not found in {data_dir!r} or {root!r}; "
            f"extract {fmt.url.rsplit('/', 1)[1]} into {root!r} or pass download=True "
            f"(dataset_download: True)"
        )
    for f in files:
        size, want = os.path.getsize(os.path.join(data_dir, f)), fmt.file_records[f] * fmt.record_bytes
        if size != want:
            # MindSpore's readers fail mid-epoch on a short file; fail here instead.
            raise ValueError(
                f"{os.path.join(data_dir, f)!r} has {size} bytes; a {fmt.title} binary file "
                f"{f} has {want} ({fmt.file_records[f]} records of {fmt.record_bytes} bytes)"
            )
    return data_dir, usage, sum(fmt.file_records[f] for f in files)


def read_cifar10(root: str, split: str, sampler_args: dict, workers: int, classes: Sequence[str] | None = None):
    """Reader "cifar10" of ``create_dataset``: (dataset of decoded 32x32x3 uint8 images, its class
    list). The labels are fixed by the files, so a given ``classes`` must be ``CIFAR10_CLASSES``."""
    data_dir, usage, rows = _cifar_files(root, "cifar10", split, classes, list(CIFAR10_CLASSES))
    sampler = ShardSampler(rows, **sampler_args)
    dataset = ds.Cifar10Dataset(data_dir, usage=usage, sampler=sampler, num_parallel_workers=workers)
    return dataset, list(CIFAR10_CLASSES)


def read_cifar100(root: str, split: str, sampler_args: dict, workers: int, classes: Sequence[str] | None = None):
    """Reader "cifar100" of ``create_dataset``: (dataset of decoded 32x32x3 uint8 images with
    their fine label, the 100 fine label names). A given ``classes`` must be those names."""
    names = cifar100_classes(root)
    data_dir, usage, rows = _cifar_files(root, "cifar100", split, classes, names)
    sampler = ShardSampler(rows, **sampler_args)
    source = ds.Cifar100Dataset(data_dir, usage=usage, sampler=sampler, num_parallel_workers=workers)
    dataset = source.project(["image", "fine_label"]).rename(["fine_label"], ["label"])
    dataset.sampler = source.sampler  # create_dataset sets the epoch on it
    return dataset, names


def download_cifar(name: str, root: str, split: str | None = None, progress: bool = True) -> bool:
    """Fetch and extract the official archive of "cifar10" / "cifar100" into ``root`` unless
    ``cifar_dir`` already finds the files of ``split`` (None: of every split); True when an
    archive was extracted.

    An archive already at ``<root>/<archive name>`` (e.g. placed by hand) is used when its hash
    matches; it is deleted once extracted.
    """
    fmt = CIFAR_FORMATS[name]
    if split is not None and split not in fmt.splits:
        raise ValueError(f"unknown {name} split {split!r}; choose one of {sorted(fmt.splits)}")
    files = sorted(fmt.file_records) if split is None else fmt.splits[split][1]
    if cifar_dir(root, name, files) is not None:
        return False
    archive = os.path.join(root, fmt.url.rsplit("/", 1)[1])
    ensure_file(fmt.url, archive, fmt.sha256, progress)
    extract(archive, root)
    if cifar_dir(root, name, files) is None:
        raise FileNotFoundError(
            f"{archive} did not hold the {fmt.title} files {files} under {fmt.folder}/; is it the binary version?"
        )
    os.remove(archive)
    return True
