"""tflm_train.converter: rewrites a .tflite so that it trains itself.

    from tflm_train.converter import ConvertConfig, convert
    result = convert(open("model.tflite", "rb").read(), ConvertConfig(method="lora"))

Layout: model_ir (read/edit/write .tflite), matching (target specs), layers
(reading FULLY_CONNECTED layers), methods/ (lora, adapter, bias, head),
losses (where the loss attaches), backward (gradient ops), state_format (the
training state's bytes), convert (the pipeline), merge (fold a trained state
back into a plain .tflite).
"""

from tflm_train.converter.config import ConversionError, ConvertConfig
from tflm_train.converter.convert import ConvertResult, convert
from tflm_train.converter.ops import OptimizerConfig

__all__ = ["ConversionError", "ConvertConfig", "ConvertResult", "OptimizerConfig", "convert"]
