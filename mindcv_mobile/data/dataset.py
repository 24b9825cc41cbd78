"""create_dataset: an ImageFolder tree or CIFAR-10 binary as a sharded ("image", "label") dataset.

ImageFolder reader (name "imagenet"): the file list is scanned once, sorted, and each file is
sorted into one of three routes by a cheap check of its bytes (first and last bytes, JPEG
marker segments, PNG chunk CRCs; no decode):

* native  -- a JPEG ending in EOI whose marker segments libjpeg accepts (see
  ``jpeg_structure_problem``), or a PNG ending in IEND whose chunk CRCs match: its encoded
  bytes go to MindSpore's C++ ``Decode`` / ``RandomCropDecodeResize``. MindSpore 2.10 decodes
  CMYK JPEG, grayscale, palette, RGBA/LA and 16-bit PNG to RGB uint8 itself (checked
  pixel-equal to PIL), so a file's colour mode does not matter here.
* reencode -- any other format (WebP, GIF, TIFF, BMP, PPM...), or a JPEG/PNG whose end marker
  is missing but which PIL still decodes completely: decoded by PIL, converted to RGB uint8
  and served as PNG bytes, so the transforms see the same kind of input for every file.
* skipped -- PIL cannot decode it (not an image, empty, truncated): dropped from the list
  with one warning naming the file. A truncated JPEG must never reach MindSpore 2.10's
  ``Decode``: it raises "libjpeg: Empty input file" and stops the whole pipeline (and dumps
  the file to ./abnormal_image.jpg). A JPEG with both end markers but a broken header (a bad
  Huffman table, a garbled frame header) is worse: the same ``Decode`` kills the process
  (segmentation fault, "stack smashing detected"), and a PNG with a corrupt chunk stops the
  pipeline; hence the structure check of the native route.

Files whose extension is not an image extension (README.txt, .DS_Store) are not images of the
tree and are ignored without a warning; a *.jpg that is not an image is skipped with one.
"""
from __future__ import annotations

import io
import logging
import mmap
import os
import re
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
        if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") and not _jpeg_file_problem(path):
            return "native", ""
    elif head.startswith(_PNG_MAGIC):
        if b"IEND" in tail[-12:] and _png_chunks_intact(path):
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


def _png_chunks_intact(path: str) -> bool:
    """Every chunk's CRC matches (PIL's verify reads the chunks, it does not decode)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception:  # noqa: BLE001  PIL raises many types for broken files
        return False
    return True


# JPEG frames MindSpore 2.10's libjpeg decodes: baseline, extended sequential and progressive
# Huffman. Arithmetic, lossless and hierarchical frames take the PIL route.
_SOF_SEQUENTIAL = (0xC0, 0xC1)
_SOF_PROGRESSIVE = 0xC2
# A marker inside entropy-coded data: 0xFF followed by anything but stuffing (00), RSTn or fill.
_MARKER_IN_DATA = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _u16(buf, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def jpeg_structure_problem(buf) -> str:
    """What in a JPEG's marker segments libjpeg stops on, or "" when nothing.

    The checks are those libjpeg makes with a fatal error (jdmarker.c, jdhuff.c, jdphuff.c,
    jdinput.c): unknown markers, segment lengths, quantization and Huffman table definitions
    (code-space overflow included), frame and scan headers, tables a scan uses, progression
    parameters and sequence, and a scan with no data. MindSpore 2.10's decoder turns those
    errors into a crash of the whole process, so such files must not reach it. Corrupt
    entropy-coded data is not checked: libjpeg warns about it and decodes what it can.
    Costs ~0.07 ms for a 500x375 baseline JPEG (header only; progressive files are read whole).
    """
    n = len(buf)
    pos, frame, quant, huffman, coef_bits, scans = 2, None, set(), set(), {}, 0
    while True:
        if pos >= n or buf[pos] != 0xFF:
            return f"no JPEG marker at byte {pos}"
        while pos < n and buf[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return "ends inside a marker"
        marker = buf[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return "" if scans else "no image data before the end marker"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no segment
            continue
        if pos + 2 > n or _u16(buf, pos) < 2 or pos + _u16(buf, pos) > n:
            return f"segment 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file"
        seg = bytes(buf[pos + 2:pos + _u16(buf, pos)])
        pos += 2 + len(seg)
        if marker == 0xDB:  # DQT
            i = 0
            while i < len(seg):
                if seg[i] >> 4 > 1 or seg[i] & 15 > 3:
                    return "bad quantization table"
                quant.add(seg[i] & 15)
                i += 1 + 64 * ((seg[i] >> 4) + 1)
            if i != len(seg):
                return "bad quantization table length"
        elif marker == 0xC4:  # DHT
            i = 0
            while i < len(seg):
                if i + 17 > len(seg) or seg[i] >> 4 > 1 or seg[i] & 15 > 3:
                    return "bad Huffman table"
                counts = seg[i + 1:i + 17]
                values = seg[i + 17:i + 17 + sum(counts)]
                if sum(counts) > 256 or len(values) < sum(counts):
                    return "bad Huffman table"
                code = 0
                for bits, count in enumerate(counts, 1):
                    code += count  # no code may be all ones: codes of b bits stay below 2**b
                    if code >= 1 << bits:
                        return "bad Huffman table"
                    code <<= 1
                if seg[i] >> 4 == 0 and any(v > 15 for v in values):  # DC symbols are bit counts
                    return "bad Huffman table"
                huffman.add((seg[i] >> 4, seg[i] & 15))
                i += 17 + len(values)
        elif marker in _SOF_SEQUENTIAL or marker == _SOF_PROGRESSIVE:
            if frame is not None or len(seg) < 6:
                return "bad frame header"
            precision, height, width, ncomp = seg[0], _u16(seg, 1), _u16(seg, 3), seg[5]
            if precision != 8 or not height or not width or ncomp not in (1, 3, 4) or len(seg) != 6 + 3 * ncomp:
                return f"unsupported frame ({precision}-bit, {width}x{height}, {ncomp} components)"
            comps = {seg[6 + 3 * k]: (seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k]) for k in range(ncomp)}
            hmax, vmax = max(h for h, _, _ in comps.values()), max(v for _, v, _ in comps.values())
            if len(comps) != ncomp or any(not (1 <= h <= 4 and 1 <= v <= 4) or q > 3 or hmax % h or vmax % v
                                          for h, v, q in comps.values()):
                return "bad frame header"
            frame = (marker, comps)
        elif 0xC0 <= marker <= 0xCF:  # other frame types, DAC (arithmetic coding)
            return f"frame type 0xFF{marker:02X} (not baseline or progressive Huffman)"
        elif marker == 0xDA:  # SOS
            if frame is None:
                return "scan before the frame header"
            ns = seg[0] if seg else 0
            if not 1 <= ns <= 4 or len(seg) != 4 + 2 * ns:
                return "bad scan header"
            ids = [seg[1 + 2 * k] for k in range(ns)]
            if len(set(ids)) != ns or any(c not in frame[1] or frame[1][c][2] not in quant for c in ids):
                return "scan of an undefined component or quantization table"
            ss, se, ah, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] >> 4, seg[3 + 2 * ns] & 15
            progressive = frame[0] == _SOF_PROGRESSIVE
            # Tables a scan decodes with: DC and AC (sequential), DC (first DC scan of a
            # progressive file), AC (AC scans); DC refinement scans use none.
            kinds = (0, 1) if not progressive else ((1,) if ss else (() if ah else (0,)))
            if any((kind, seg[2 + 2 * k] >> 4 if kind == 0 else seg[2 + 2 * k] & 15) not in huffman
                   for k in range(ns) for kind in kinds):
                return "scan uses an undefined Huffman table"
            if progressive:
                if ((se != 0) if ss == 0 else (ss > se or se > 63 or ns != 1)) or (ah and al != ah - 1) or al > 13:
                    return "bad progression parameters"
                # libjpeg only warns "Inconsistent progression sequence", but MindSpore 2.10
                # raises on it: each scan must refine exactly what earlier scans left.
                for c in ids:
                    bits = coef_bits.setdefault(c, [-1] * 64)
                    if (ss and bits[0] < 0) or any(ah != max(bits[i], 0) for i in range(ss, se + 1)):
                        return "inconsistent progression sequence"
                    bits[ss:se + 1] = [al] * (se + 1 - ss)
            scans += 1
            if pos + 1 >= n or (buf[pos] == 0xFF and buf[pos + 1] != 0x00):
                return "a scan without data"
            if not progressive:
                return ""  # the rest is entropy-coded data
            found = _MARKER_IN_DATA.search(buf, pos)  # later scans bring their own tables
            pos = found.start() if found else n
        elif marker == 0xDD:  # DRI
            if len(seg) != 2:
                return "bad restart interval"
        elif not (0xE0 <= marker <= 0xEF or marker in (0xFE, 0xDC)):  # APPn, COM, DNL
            return f"unknown marker 0xFF{marker:02X}"


def _jpeg_file_problem(path: str) -> str:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return jpeg_structure_problem(buf)
    except (OSError, ValueError) as e:
        return f"cannot read ({e})"


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
