"""data/image_files.py: routing of files by their bytes, and read_image for inference."""

from __future__ import annotations

import io

import mindspore.dataset.vision as vision
import numpy as np
import pytest
from PIL import Image

from mindcv_mobile.data import read_image
from mindcv_mobile.data.image_files import jpeg_structure_problem, probe_image


def gradient(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], -1).astype(np.uint8)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bad_huffman_jpeg() -> bytes:
    """A JPEG whose first Huffman table claims 255 codes of every length (more than fit), both end
    markers intact: the file MindSpore 2.10's ``Decode`` kills the process on (as in test_faults)."""
    jpeg = encoded(Image.fromarray(gradient()), "JPEG", quality=90)
    data = bytearray(jpeg)
    dht = jpeg.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


@pytest.fixture
def decode_calls(monkeypatch) -> list:
    """Counts MindSpore ``Decode`` ops created (read_image makes one per natively decoded file)."""
    calls = []
    original = vision.Decode

    def counting_decode(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(vision, "Decode", counting_decode)
    return calls


def test_corrupt_huffman_jpeg_raises_without_reaching_mindspore(tmp_path, decode_calls):
    data = bad_huffman_jpeg()
    assert jpeg_structure_problem(data) == "bad Huffman table"
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(data)
    assert probe_image(str(path))[0] == "skip"
    with pytest.raises(ValueError, match=r"^cannot read image .*corrupt\.jpg: not a decodable image \(OSError: "):
        read_image(str(path))
    assert decode_calls == []  # the probe stopped it: this process is still alive to say so


@pytest.mark.parametrize("mode", ["RGB", "P", "L", "RGBA"])
def test_png_reads_as_pil_decodes_it(tmp_path, decode_calls, mode):
    img = Image.fromarray(gradient()).convert(mode) if mode != "P" else Image.fromarray(gradient()).quantize(16)
    path = tmp_path / f"x_{mode}.png"
    img.save(path)
    got = read_image(str(path))
    with Image.open(path) as ref:
        expected = np.asarray(ref.convert("RGB"))
    assert got.dtype == np.uint8 and got.shape == (24, 32, 3)
    np.testing.assert_array_equal(got, expected)
    assert len(decode_calls) == 1  # a sound PNG takes MindSpore's decoder, as in validation


def test_jpeg_and_other_formats(tmp_path, decode_calls):
    jpeg = tmp_path / "x.jpg"
    jpeg.write_bytes(encoded(Image.fromarray(gradient()), "JPEG", quality=95))
    assert np.abs(read_image(str(jpeg)).astype(int) - gradient()).max() <= 16
    assert len(decode_calls) == 1
    webp = tmp_path / "x.webp"
    webp.write_bytes(encoded(Image.fromarray(gradient()), "WEBP", lossless=True))
    np.testing.assert_array_equal(read_image(str(webp)), gradient())  # PIL route
    assert len(decode_calls) == 1


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.png", b"", "empty file"),
        ("html.jpg", b"<html>404 not found</html>", "not a decodable image"),
        ("half.jpg", None, "not a decodable image"),
    ],
)
def test_unreadable_files_raise_value_error(tmp_path, decode_calls, name, data, reason):
    if data is None:
        jpeg = encoded(Image.fromarray(gradient()), "JPEG")
        data = jpeg[: len(jpeg) // 2]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"^cannot read image .*{name}: {reason}"):
        read_image(str(path))
    with pytest.raises(ValueError, match=r"^cannot read image .*missing\.png: No such file"):
        read_image(str(tmp_path / "missing.png"))
    assert decode_calls == []
