"""Quantization-aware training of MobileNetV2 (8-bit) and int8 deployment (MINDIR, ONNX).

``quantize_model`` (QAT), ``count_fake_quant`` / ``expected_fake_quant`` (what was inserted),
``build_deploy_net`` (BN folded, int8-grid weights), ``export_deploy_mindir``,
``export_int8_onnx`` (QDQ with the QAT ranges) and ``quantize_onnx`` (also post-training).
The recipe-level export behind ``export.py --quant True`` is ``quant.export.export_quant_model``.
"""
from .deploy import (DeployMobileNetV2, Int8Export, build_deploy_net, export_deploy_mindir, export_deploy_onnx,
                     export_int8_onnx, onnx_range_overrides, onnx_session, quantize_onnx, runtime_op_types)
from .fake_quant import (ActivationQuant, activation_qparams, fake_quant_activation, fake_quant_bias,
                         fake_quant_weight, observer_weights, quantize_weight)
from .qat import (NEVER, QuantConvBN, QuantDense, QuantInvertedResidual, QuantMobileNetV2, check_qat_checkpoint,
                  count_fake_quant, expected_fake_quant, quantize_from_config, quantize_model)

__all__ = [
    "NEVER", "ActivationQuant", "activation_qparams", "fake_quant_activation", "fake_quant_bias", "fake_quant_weight",
    "observer_weights", "quantize_weight", "QuantConvBN", "QuantDense", "QuantInvertedResidual", "QuantMobileNetV2",
    "check_qat_checkpoint", "count_fake_quant", "expected_fake_quant", "quantize_from_config", "quantize_model",
    "DeployMobileNetV2", "Int8Export", "build_deploy_net", "export_deploy_mindir", "export_deploy_onnx",
    "export_int8_onnx", "onnx_range_overrides", "onnx_session", "quantize_onnx", "runtime_op_types",
]
