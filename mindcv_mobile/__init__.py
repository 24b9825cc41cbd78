"""mindcv_mobile: train, validate and deploy the MobileNet family with MindSpore."""

from . import host as _host  # noqa: F401  (first: the oneDNN ISA cap must precede MindSpore)

__version__ = "0.1.0"
