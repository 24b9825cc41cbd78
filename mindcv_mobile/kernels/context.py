"""Which library the layers being built use: a ``ContextVar``, set only inside ``with use(path):``.

Layers read it once, in ``__init__``; a model built outside such a block (the default) runs
MindSpore's own ops and exports anywhere, whatever else the process did before. The variable is
per thread (and per asyncio task), so a block never leaks into code running beside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator

# "" = MindSpore's ops; otherwise the path of a library that cache.library() returned.
_LIBRARY: contextvars.ContextVar[str] = contextvars.ContextVar("mindcv_mobile_cpu_kernels", default="")


def current() -> str:
    """The library layers built now use, or "" for MindSpore's ops."""
    return _LIBRARY.get()


@contextlib.contextmanager
def use(path: str | os.PathLike) -> Iterator[str]:
    """Layers built inside the block use the compiled kernels at ``path`` (a path from
    ``library()``; "" builds them with MindSpore's ops, also inside an outer block)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"kernels.use takes the library path from kernels.library() or '', got {path!r}")
    token = _LIBRARY.set(os.fspath(path))
    try:
        yield _LIBRARY.get()
    finally:
        _LIBRARY.reset(token)


def build(factory: Callable[..., tuple], *args) -> tuple:
    """``factory(library, *args)`` -> ``(op, cfg)`` inside a ``use(path)`` block, else ``(None, None)``."""
    path = _LIBRARY.get()
    return factory(path, *args) if path else (None, None)
