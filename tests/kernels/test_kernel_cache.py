"""The compiled-kernel cache loads only a library this toolkit built and can still vouch for: its
folder and file are the user's and writable by no one else, and its sha256 is the one recorded at
build time. Anything else found at the library's path (planted, copied in, changed) is refused
with the reason, and models fall back to MindSpore's ops.

Each test works on a copy of one library built into a temporary ``MINDCV_MOBILE_HOME``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from mindcv_mobile import kernels
from mindcv_mobile.kernels import cache
from mindcv_mobile.models import create_model

PLANTED = b"\x7fELF not built by mindcv_mobile"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kernel_layers(net) -> int:
    return sum(getattr(cell, "kernel_op", None) is not None for _, cell in net.cells_and_names())


def fresh_library() -> str:
    """``kernels.library()`` without its memo before or after; skips the test where nothing builds."""
    kernels.library.cache_clear()
    try:
        path, why_not = kernels.library()
    finally:
        kernels.library.cache_clear()
    if not path:
        pytest.skip(f"compiled CPU kernels cannot be built here: {why_not}")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache home holding one freshly built library: ``(home, library path)``."""
    home = tmp_path_factory.mktemp("kernel-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINDCV_MOBILE_HOME", str(home))
        mp.delenv(kernels.SWITCH_ENV, raising=False)
        path = fresh_library()
    return home, path


@pytest.fixture
def lib(built, tmp_path, monkeypatch):
    """A private copy of the built cache, in use: the library's path (a pathlib.Path)."""
    home, path = built
    shutil.copytree(home / cache.FOLDER, tmp_path / cache.FOLDER)  # modes copied too
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    monkeypatch.delenv(kernels.SWITCH_ENV, raising=False)
    kernels.library.cache_clear()
    yield tmp_path / cache.FOLDER / os.path.basename(path)
    kernels.library.cache_clear()


def _refused(match: str) -> str:
    kernels.library.cache_clear()
    path, why_not = kernels.library()
    assert path == "", f"loaded {path}"
    assert match in why_not, why_not
    assert why_not == why_not.strip() and "\n" not in why_not
    return why_not


@pytest.mark.slow
def test_a_build_is_private_and_its_digest_recorded(built):
    home, path = built
    folder, library = home / cache.FOLDER, home / cache.FOLDER / os.path.basename(path)
    assert os.path.dirname(path) == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(library.stat().st_mode) & 0o077 == 0
    sidecar = folder / (library.name + cache.DIGEST_SUFFIX)
    assert sidecar.read_text().strip() == _sha256(library)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_the_copy_loads_and_builds_a_model_on_the_kernels(lib):
    assert kernels.library() == (str(lib), "")
    # 17 depthwise convs, the pool, 52 BatchNorms
    assert _kernel_layers(create_model("mobilenet_v2_035", num_classes=3, cpu_kernels=True)) == 17 + 1 + 52


@pytest.mark.slow
def test_a_planted_library_with_another_digest_is_not_loaded(lib):
    lib.write_bytes(PLANTED)  # the right name, other bytes; the recorded digest is the real build's
    why_not = _refused("sha256")
    assert "differs from" in why_not and str(lib) in why_not
    assert lib.read_bytes() == PLANTED  # neither loaded nor silently replaced: the user is told
    assert _kernel_layers(create_model("mobilenet_v2_035", num_classes=3, cpu_kernels=True)) == 0


def test_a_planted_digest_that_is_not_one_is_not_trusted(lib):
    sidecar = lib.with_name(lib.name + cache.DIGEST_SUFFIX)
    sidecar.write_text("anything\n")
    _refused("holds no sha256 digest")


@pytest.mark.slow
def test_a_library_without_recorded_digest_is_rebuilt_not_loaded(lib):
    lib.write_bytes(PLANTED)
    lib.with_name(lib.name + cache.DIGEST_SUFFIX).unlink()  # e.g. left by an older version
    kernels.library.cache_clear()
    path, why_not = kernels.library()
    assert (path, why_not) == (str(lib), "")
    assert lib.read_bytes() != PLANTED
    assert lib.with_name(lib.name + cache.DIGEST_SUFFIX).read_text().strip() == _sha256(lib)


def test_a_group_writable_folder_is_refused(lib):
    os.chmod(lib.parent, 0o770)
    _refused("writable by group or others (mode 770)")


def test_a_planted_library_in_a_world_writable_folder_is_refused(tmp_path, monkeypatch, built):
    """Someone else prepared the folder (anyone could have written the file and its digest)."""
    home = tmp_path / "shared"
    folder = home / cache.FOLDER
    shutil.copytree(built[0] / cache.FOLDER, folder)
    os.chmod(folder, 0o777)
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(home))
    try:
        _refused(f"the folder {folder} is writable by group or others (mode 777)")
    finally:
        kernels.library.cache_clear()


def test_a_group_writable_library_file_is_refused(lib):
    os.chmod(lib, 0o770)
    _refused(f"the file {lib} is writable by group or others")


def test_a_symlinked_library_is_refused(lib, tmp_path):
    real = tmp_path / "elsewhere.so"
    shutil.copy2(lib, real)
    lib.unlink()
    lib.symlink_to(real)
    _refused("is not a regular file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_folder_of_another_user_is_refused(lib):
    os.chown(lib.parent, 65534, -1)
    _refused("belongs to uid 65534, not to you")


@pytest.mark.slow
def test_the_compiler_writes_a_private_temporary_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_MOBILE_HOME", str(tmp_path))
    monkeypatch.delenv(kernels.SWITCH_ENV, raising=False)
    outputs = []
    real_run = subprocess.run

    def spy(cmd, **kwargs):
        if "-o" in cmd:
            out = cmd[cmd.index("-o") + 1]
            outputs.append((out, stat.S_IMODE(os.stat(out).st_mode)))  # mkstemp made it, 0600
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(cache.subprocess, "run", spy)
    path = fresh_library()
    ((out, mode),) = outputs
    folder = tmp_path / cache.FOLDER
    assert os.path.dirname(out) == str(folder) and out != path and os.path.basename(out).startswith(".")
    assert mode == 0o600
    assert not os.path.exists(out)  # renamed into place
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".lock", os.path.basename(path), os.path.basename(path) + cache.DIGEST_SUFFIX]
    )
