"""Shared fixtures."""

from __future__ import annotations

import pytest

import mindcv_mobile  # noqa: F401  (first: CPU ISA default before MindSpore loads)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """scikit-learn's handwritten digits as <root>/{train,val}/<0..9>/*.png, 32x32, written once."""
    from mindcv_mobile.data.digits import write_digits_imagefolder

    root = tmp_path_factory.mktemp("data") / "digits"
    write_digits_imagefolder(str(root), image_size=32)
    return str(root)
