"""Shared fixtures."""

from __future__ import annotations

import os

import pytest

import mindcv_mobile  # noqa: F401  (first: CPU ISA default before MindSpore loads)
from mindcv_mobile.download import DOWNLOAD_BASE_ENV

# No test touches the internet: every download (pretrained weights, datasets), in this process
# and in the subprocesses tests start, goes to a closed local port unless a test serves files.
os.environ[DOWNLOAD_BASE_ENV] = "http://127.0.0.1:9/offline"


@pytest.fixture(autouse=True)
def _package_log_handlers():
    """The package logger's handlers as before each test: an entry point's ``main`` attaches a
    handler on the ``sys.stderr`` of its test (pytest's capture, closed afterwards); left in
    place, later tests' log records would hit a closed stream."""
    import logging

    logger = logging.getLogger("mindcv_mobile")
    before = list(logger.handlers)
    yield
    for handler in [h for h in logger.handlers if h not in before]:
        logger.removeHandler(handler)
        handler.close()
    for handler in before:
        if handler not in logger.handlers:
            logger.addHandler(handler)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """scikit-learn's handwritten digits as <root>/{train,val}/<0..9>/*.png, 32x32, written once."""
    from mindcv_mobile.data.digits import write_digits_imagefolder

    root = tmp_path_factory.mktemp("data") / "digits"
    write_digits_imagefolder(str(root), image_size=32)
    return str(root)


def _in_mode(mode):
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    return previous


@pytest.fixture(params=["pynative", "graph"])
def mode(request):
    """Runs the test in MindSpore's PyNative mode, then in graph mode."""
    import mindspore as ms

    previous = _in_mode(ms.PYNATIVE_MODE if request.param == "pynative" else ms.GRAPH_MODE)
    yield ms.get_context("mode")
    ms.set_context(mode=previous)


@pytest.fixture
def graph_mode():
    import mindspore as ms

    previous = _in_mode(ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture
def pynative_mode():
    import mindspore as ms

    previous = _in_mode(ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)
