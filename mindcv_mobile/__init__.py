"""mindcv_mobile: train, validate and deploy the MobileNet family with MindSpore."""
from . import runtime as _runtime  # noqa: F401  (applies CPU speed settings before MindSpore loads)

__version__ = "0.1.0"
