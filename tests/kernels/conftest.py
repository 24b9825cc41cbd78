"""Fixtures of the compiled-kernel tests."""

import pytest

from mindcv_mobile import kernels


@pytest.fixture(scope="module")
def kernel_path():
    """The compiled library's path; the test is skipped, naming why, where it cannot be built."""
    path, why_not = kernels.library()
    if not path:
        pytest.skip(f"compiled CPU kernels unavailable here: {why_not}")
    return path
