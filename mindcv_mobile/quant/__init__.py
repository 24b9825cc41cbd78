"""Quantization-aware training of MobileNetV2 (8-bit) and its deploy graph.

``quantize_model`` (QAT), ``count_fake_quant`` / ``expected_fake_quant`` (what was inserted) and
``build_deploy_net`` (BN folded, int8-grid weights). Files (the deploy MINDIR, the int8 ONNX) are
written by ``mindcv_mobile.deploy``, the one export path for float and QAT checkpoints.
"""

from .deploy import DeployMobileNetV2, build_deploy_net
from .fake_quant import (
    ActivationQuant,
    activation_qparams,
    fake_quant_activation,
    fake_quant_bias,
    fake_quant_weight,
    observer_weights,
    quantize_weight,
)
from .qat import (
    NEVER,
    QuantConvBN,
    QuantDense,
    QuantInvertedResidual,
    QuantMobileNetV2,
    count_fake_quant,
    expected_fake_quant,
    quantize_model,
)
from .recipe import check_qat_checkpoint, check_quant_config, quantize_from_config

__all__ = [
    "NEVER",
    "ActivationQuant",
    "activation_qparams",
    "fake_quant_activation",
    "fake_quant_bias",
    "fake_quant_weight",
    "observer_weights",
    "quantize_weight",
    "QuantConvBN",
    "QuantDense",
    "QuantInvertedResidual",
    "QuantMobileNetV2",
    "check_qat_checkpoint",
    "check_quant_config",
    "count_fake_quant",
    "expected_fake_quant",
    "quantize_from_config",
    "quantize_model",
    "DeployMobileNetV2",
    "build_deploy_net",
]
