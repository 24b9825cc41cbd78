"""create_dataset: an ImageFolder tree or CIFAR-10 binary as a sharded ("image", "label") dataset.

ImageFolder reader (name "imagenet"): the file list is scanned once, sorted, and each file is
sorted into one of three routes by a cheap check of its first and last bytes (no decode):

* native  -- a JPEG ending in EOI or a PNG ending in IEND: its encoded bytes go to MindSpore's
  C++ ``Decode`` / ``RandomCropDecodeResize``. MindSpore 2.10 decodes CMYK JPEG, grayscale,
  palette, RGBA/LA and 16-bit PNG to RGB uint8 itself (checked pixel-equal to PIL), so a
  file's colour mode does not matter here and its header need not be parsed.
* reencode -- any other format (WebP, GIF, TIFF, BMP, PPM...), or a JPEG/PNG whose end marker
  is missing but which PIL still decodes completely: decoded by PIL, converted to RGB uint8
  and served as PNG bytes, so the transforms see the same kind of input for every file.
* skipped -- PIL cannot decode it (not an image, empty, truncated): dropped from the list
  with one warning naming the file. A truncated JPEG must never reach MindSpore 2.10's
  ``Decode``: it raises "libjpeg: Empty input file" and stops the whole pipeline (and dumps
  the file to ./abnormal_image.jpg).

Files whose extension is not an image extension (README.txt, .DS_Store) are not images of the
tree and are ignored without a warning; a *.jpg that is not an image is skipped with one.
"""
from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import mindspore.dataset as ds
import numpy as np

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# CIFAR-10 binary version: <root>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin,
# 10000 records of 1 label byte + 32*32*3 pixel bytes each.
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3
CIFAR10_FILE_RECORDS = 10000
CIFAR10_SPLITS = {
    "train": ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
    "val": ("test", ["test_batch.bin"]),
    "test": ("test", ["test_batch.bin"]),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL_BYTES = 32
# Warn per bad file up to this many, then once with the remaining count, so a tree with
# thousands of broken files does not bury the log.
_MAX_FILE_WARNINGS = 50


# --------------------------------------------------------------------------- ImageFolder scan
@dataclass
class ImageFolderIndex:
    """The scanned content of ``<root>/<split>``: usable files in sorted order, with labels."""
    split_dir: str
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    reencode: list[bool] = field(default_factory=list)  # True -> decode with PIL, serve PNG
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    empty_classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def _list_class_dirs(split_dir: str) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir)
                  if e.is_dir() and not e.name.startswith("."))


def _split_dir(root: str, split: str) -> str:
    """``<root>/<split>`` after checking both exist, with an error that shows what does."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"dataset root {root!r} does not exist or is not a folder; expected an ImageFolder "
            f"tree <root>/<split>/<class_name>/<images>")
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        present = sorted(e.name for e in os.scandir(root) if e.is_dir())
        raise FileNotFoundError(
            f"split folder {split_dir!r} not found; {root!r} has subfolders {present}; expected "
            f"<root>/<split>/<class_name>/<images> with split={split!r}")
    return split_dir


def class_names(root: str, split: str = "train", name: str = "imagenet") -> list[str]:
    """Class names in label order: the sorted class folders of ``<root>/<split>`` for an
    ImageFolder tree, the fixed CIFAR-10 names for "cifar10"."""
    key = str(name).lower()
    if key == "cifar10":
        return list(CIFAR10_CLASSES)
    if key not in DATASET_READERS:
        raise ValueError(f"unknown dataset name {name!r}; choose one of {sorted(DATASET_READERS)}")
    split_dir = _split_dir(root, split)
    classes = _list_class_dirs(split_dir)
    if not classes:
        raise ValueError(
            f"split folder {split_dir!r} has no class subfolders; expected "
            f"{split_dir}/<class_name>/<images>")
    return classes


def _probe(path: str) -> tuple[str, str]:
    """Route of one file: ("native" | "reencode" | "skip", reason) from its first/last bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_PNG_MAGIC))
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as e:
        return "skip", f"cannot read ({e.strerror or e})"
    if size == 0:
        return "skip", "empty file"
    if head.startswith(_JPEG_MAGIC):
        # Padding after EOI is common (cameras, some encoders) and harmless to libjpeg.
        if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return "native", ""
    elif head.startswith(_PNG_MAGIC):
        if b"IEND" in tail[-12:]:
            return "native", ""
    # Other formats, or a JPEG/PNG without its end marker: only what PIL decodes fully is kept.
    return _verify_with_pil(path)


def _verify_with_pil(path: str) -> tuple[str, str]:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()  # truncated data raises here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    except Exception as e:  # noqa: BLE001  PIL raises many types for broken files
        return "skip", f"not a decodable image ({type(e).__name__}: {e})"
    return "reencode", ""


def _scan_class(args: tuple[int, str]) -> tuple[int, list[tuple[str, str, str]]]:
    label, class_dir = args
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, name)
            route, reason = _probe(path)
            found.append((path, route, reason))
    return label, found


def scan_image_folder(root: str, split: str = "train", workers: int = 8) -> ImageFolderIndex:
    """List and probe every image of ``<root>/<split>`` (sorted, same order on every rank).

    Warns once per unusable file and per class folder without images; raises when the split
    has no class folder or no usable image at all.
    """
    classes = class_names(root, split, "imagenet")
    split_dir = os.path.join(root, split)
    index = ImageFolderIndex(split_dir=split_dir, classes=classes)
    start = time.perf_counter()
    jobs = [(label, os.path.join(split_dir, c)) for label, c in enumerate(classes)]
    # Probing is open + two small reads per file: I/O bound, so threads overlap the latency
    # of network file systems; the result order does not depend on the pool (map keeps it).
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        for label, found in pool.map(_scan_class, jobs):
            n_before = len(index.paths)
            for path, route, reason in found:
                if route == "skip":
                    index.skipped.append((path, reason))
                    continue
                index.paths.append(path)
                index.labels.append(label)
                index.reencode.append(route == "reencode")
            if len(index.paths) == n_before:
                index.empty_classes.append(classes[label])

    for path, reason in index.skipped[:_MAX_FILE_WARNINGS]:
        _logger.warning("skipping %s: %s", path, reason)
    if len(index.skipped) > _MAX_FILE_WARNINGS:
        _logger.warning("skipping %d more unusable files under %s (first %d listed above)",
                        len(index.skipped) - _MAX_FILE_WARNINGS, split_dir, _MAX_FILE_WARNINGS)
    for name in index.empty_classes:
        _logger.warning("class folder %s has no usable images (extensions %s); its label "
                        "index %d is kept", os.path.join(split_dir, name),
                        "/".join(IMAGE_EXTENSIONS), classes.index(name))
    if not index.paths:
        raise ValueError(
            f"no usable images under {split_dir!r} ({len(classes)} class folders, "
            f"{len(index.skipped)} unusable files); expected {split_dir}/<class_name>/<images> "
            f"with extensions {IMAGE_EXTENSIONS}")
    _logger.info("%s: %d images in %d classes (%d re-encoded via PIL, %d skipped), scanned in "
                 "%.1f s", split_dir, len(index), len(classes), sum(index.reencode),
                 len(index.skipped), time.perf_counter() - start)
    return index


def pil_to_rgb_uint8(img) -> np.ndarray:
    """Any PIL image as an HxWx3 uint8 array; 16-bit and float modes are scaled, not clipped."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's convert("RGB") clips 16-bit values at 255 instead of scaling them.
        gray = (np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        if gray.size and gray.max() <= 1.0:
            gray = gray * 255.0
        gray = gray.clip(0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _reencode_as_png(path: str) -> bytes:
    from PIL import Image
    with Image.open(path) as img:
        img.seek(0)  # first frame of an animated GIF/WebP
        rgb = pil_to_rgb_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class EncodedImageSource:
    """Random-access source of (encoded image bytes as uint8 array, int32 label)."""

    def __init__(self, index: ImageFolderIndex):
        self.paths = index.paths
        self.labels = np.asarray(index.labels, dtype=np.int32)
        self.reencode = index.reencode

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> bytes:
        if self.reencode[i]:
            return _reencode_as_png(self.paths[i])
        with open(self.paths[i], "rb") as f:
            return f.read()

    def __getitem__(self, i: int):
        i = int(i)
        # A file that vanished or broke after the scan must not stop a multi-day run:
        # serve the next readable file in the list instead (with a warning naming it).
        for attempt in range(min(len(self.paths), 16)):
            j = (i + attempt) % len(self.paths)
            try:
                data = self._read(j)
            except Exception as e:  # noqa: BLE001
                _logger.warning("skipping %s at read time (%s: %s); serving the next file",
                                self.paths[j], type(e).__name__, e)
                continue
            return np.frombuffer(data, dtype=np.uint8), self.labels[j]
        raise OSError(f"16 consecutive files from {self.paths[i]!r} could not be read")


# --------------------------------------------------------------------------- sharding sampler
class ShardSampler(ds.Sampler):
    """Seeded per-epoch permutation split between shards; every rank draws the same one.

    shuffle=True: each shard takes ``num_rows // num_shards`` rows of a fresh permutation per
    epoch (seeded by (seed, epoch)), so every rank runs the same number of steps; at most
    num_shards - 1 rows are left out per epoch, different ones each epoch. shuffle=False:
    shard k takes rows k, k + num_shards, ... so the shards are disjoint and cover every row
    (for evaluation). ``num_samples`` caps each shard. Set ``epoch`` to resume a run's order.
    """

    def __init__(self, num_rows: int, shuffle: bool, num_samples: int | None, num_shards: int,
                 shard_id: int, seed: int):
        self.num_rows, self.shuffle, self.cap = num_rows, shuffle, num_samples
        self.num_shards, self.shard_id, self.seed = num_shards, shard_id, seed
        self.epoch = 0
        super().__init__(num_samples=None)  # takes len(self)

    def indices(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            per_shard = self.num_rows // self.num_shards
            order = order[self.shard_id * per_shard:(self.shard_id + 1) * per_shard]
        else:
            order = np.arange(self.shard_id, self.num_rows, self.num_shards)
        return order if self.cap is None else order[:self.cap]

    def __iter__(self):
        order = self.indices(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.indices(0))

    def is_shuffled(self) -> bool:
        return self.shuffle

    def is_sharded(self) -> bool:
        return self.num_shards > 1


def _check_sharding(num_shards, shard_id) -> tuple[int, int]:
    if num_shards is None and shard_id is None:
        return 1, 0
    if num_shards is None or shard_id is None:
        raise ValueError(f"num_shards and shard_id go together; got num_shards={num_shards}, "
                         f"shard_id={shard_id}")
    if int(num_shards) < 1 or not 0 <= int(shard_id) < int(num_shards):
        raise ValueError(f"need num_shards >= 1 and 0 <= shard_id < num_shards; got "
                         f"num_shards={num_shards}, shard_id={shard_id}")
    return int(num_shards), int(shard_id)


def default_num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# --------------------------------------------------------------------------- readers
_SCAN_CACHE: dict = {}


def _scan_cached(root: str, split: str) -> ImageFolderIndex:
    """``scan_image_folder``, remembered while the split's folders are unchanged (mtimes), so a
    trainer that rebuilds its pipeline every epoch does not rescan ImageNet every epoch."""
    split_dir = os.path.abspath(os.path.join(root, split))
    try:
        stamp = (os.stat(split_dir).st_mtime_ns,) + tuple(
            sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(split_dir) if e.is_dir()))
    except OSError:
        return scan_image_folder(root, split)  # raises the descriptive error
    key = (split_dir, stamp)
    if key not in _SCAN_CACHE:
        if len(_SCAN_CACHE) >= 8:
            _SCAN_CACHE.clear()
        _SCAN_CACHE[key] = scan_image_folder(root, split)
    return _SCAN_CACHE[key]


def _create_imagefolder(root, split, sampler_args, workers):
    index = _scan_cached(root, split)
    sampler = ShardSampler(len(index), **sampler_args)
    if len(sampler) == 0:
        raise ValueError(f"{index.split_dir!r} has {len(index)} images, too few for "
                         f"num_shards={sampler_args['num_shards']}")
    # Threads, not processes: the source only reads bytes (the GIL is released during I/O)
    # and decoding happens in the C++ map. Two reader threads hide file latency; measured on
    # 500x375 JPEGs this costs ~10% more CPU per image than ImageFolderDataset's C++ reader.
    return ds.GeneratorDataset(EncodedImageSource(index), column_names=["image", "label"],
                               sampler=sampler, num_parallel_workers=min(2, workers),
                               python_multiprocessing=False)


def _create_cifar10(root, split, sampler_args, workers):
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"unknown cifar10 split {split!r}; choose one of {sorted(CIFAR10_SPLITS)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist; expected "
                                f"<root>/{CIFAR10_DIR}/ (CIFAR-10 binary version)")
    data_dir = os.path.join(root, CIFAR10_DIR)
    usage, files = CIFAR10_SPLITS[split]
    missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 binary files {missing} not found in {data_dir!r}; "
                                f"expected the extracted cifar-10-binary.tar.gz there")
    for f in files:
        size = os.path.getsize(os.path.join(data_dir, f))
        if size != CIFAR10_FILE_RECORDS * CIFAR10_RECORD_BYTES:
            # MindSpore's Cifar10 reader fails mid-epoch on a short file; fail here instead.
            raise ValueError(f"{os.path.join(data_dir, f)!r} has {size} bytes; a CIFAR-10 binary "
                             f"batch has {CIFAR10_FILE_RECORDS * CIFAR10_RECORD_BYTES} "
                             f"({CIFAR10_FILE_RECORDS} records of {CIFAR10_RECORD_BYTES} bytes)")
    num_rows = CIFAR10_FILE_RECORDS * len(files)
    sampler = ShardSampler(num_rows, **sampler_args)
    return ds.Cifar10Dataset(data_dir, usage=usage, sampler=sampler, num_parallel_workers=workers)


DATASET_READERS = {
    "imagenet": _create_imagefolder,  # any ImageFolder tree <root>/<split>/<class>/<images>
    "cifar10": _create_cifar10,
}


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
):
    """A ``mindspore.dataset`` with columns ("image", "label") for one split, one shard.

    Args:
        name: one of ``DATASET_READERS``: "imagenet" (any ImageFolder tree, images as encoded
            bytes for ``create_transforms("imagenet")``) or "cifar10" (binary version under
            ``<root>/cifar-10-batches-bin``, images as decoded 32x32x3 uint8).
        root: dataset root; split: sub-folder ("imagenet") or train/val/test ("cifar10").
        shuffle: reshuffle every epoch; every shard uses the same permutation, so shards stay
            disjoint. With shuffle=False the shards also cover every sample.
        num_samples: at most this many samples per shard (e.g. for a quick run).
        num_shards, shard_id: this process's part of the data (rank, group size).
        num_parallel_workers: reader threads; default min(8, cpu count).
        seed: shuffle seed; None -> ``mindspore.dataset.config.get_seed()`` so every rank agrees.
        epoch: the epoch the first iteration is; the shuffle order of epoch e depends only on
            (seed, e), so a resumed run sees the same order as an uninterrupted one.
    """
    key = str(name).lower()
    if key not in DATASET_READERS:
        raise ValueError(f"unknown dataset name {name!r}; choose one of {sorted(DATASET_READERS)}")
    if num_samples is not None and int(num_samples) <= 0:
        raise ValueError(f"num_samples must be a positive int or None; got {num_samples!r}")
    num_shards, shard_id = _check_sharding(num_shards, shard_id)
    workers = default_num_workers() if num_parallel_workers is None else int(num_parallel_workers)
    if workers < 1:
        raise ValueError(f"num_parallel_workers must be >= 1; got {num_parallel_workers!r}")
    if seed is None:
        seed = ds.config.get_seed()
    sampler_args = dict(shuffle=bool(shuffle),
                        num_samples=None if num_samples is None else int(num_samples),
                        num_shards=num_shards, shard_id=shard_id, seed=int(seed))
    dataset = DATASET_READERS[key](root, split, sampler_args, workers)
    dataset.sampler.epoch = int(epoch)
    return dataset
