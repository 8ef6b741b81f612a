"""tflm_train.converter: rewrites a .tflite so that it trains itself.

    from tflm_train.converter import ConvertConfig, convert
    result = convert(open("model.tflite", "rb").read(), ConvertConfig(method="lora"))

Layout: model_ir (read/edit/write .tflite), matching (target specs), layers
(reading FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D layers), config
(ConvertConfig), methods/ (one module and MethodSpec per method: lora,
adapter, bias, head, sparse; the registry), losses (where the loss attaches),
activation_masks (a pass: bit masks instead of kept outputs), backward (the
driver) and gradients/ (the backward rule of each op type), recompute and
liveness (what the backward pass recomputes), state_format (the training
state's bytes), convert (the pipeline), merge (fold a trained state back into
a plain .tflite), errors (ConversionError).
"""

from tflm_train.converter.config import ConversionError, ConvertConfig
from tflm_train.converter.convert import ConvertResult, convert
from tflm_train.converter.ops import OptimizerConfig

__all__ = ["ConversionError", "ConvertConfig", "ConvertResult", "OptimizerConfig", "convert"]
