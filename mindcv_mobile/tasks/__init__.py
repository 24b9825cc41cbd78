"""The workflows behind the entry scripts: ``train`` (the loop), ``validate``, ``export`` and
``infer``. Each takes a resolved Config, initialises the runtime, calls the build step and the
deploy package, and returns what it produced; the scripts only parse and print."""

from .export import export
from .infer import InferResult, infer
from .train import RunResult, train
from .validate import validate

__all__ = ["InferResult", "RunResult", "export", "infer", "train", "validate"]
