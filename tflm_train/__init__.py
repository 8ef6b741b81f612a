"""tflm-train: TFLM models that fine-tune themselves on the device.

The converter (tflm_train.converter) rewrites a .tflite so that training is
part of the model; the kernels in tflm_ops/ run it inside the stock TFLM
interpreter. This package drives the tflite-micro x86 interpreter on a host.

The Python API (tflm_train/api.py; README "Python API"):

    import tflm_train as tt
    result = tt.convert("model.tflite", tt.ConvertConfig(method="lora"))
    model = tt.TrainableModel(result.model)
    tt.fit(model, x, y, epochs=5, learning_rate=0.02)

Its names are imported on first use, so `tflm-train --help` and
`import tflm_train` stay fast.
"""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING

from tflm_train._pins import TFLITE_MICRO_VERSION
from tflm_train.errors import TflmTrainError

if TYPE_CHECKING:
    from tflm_train.api import (
        ConvertConfig,
        ConvertPlan,
        ConvertResult,
        FitResult,
        LossName,
        MethodName,
        OptimizerConfig,
        OptimizerName,
        PlainModel,
        Report,
        TrainableModel,
        convert,
        evaluate,
        fit,
        merge,
        plan,
        report,
    )

_API = (
    "ConvertConfig", "ConvertPlan", "ConvertResult", "FitResult", "LossName", "MethodName", "OptimizerConfig",
    "OptimizerName", "PlainModel", "Report", "TrainableModel", "convert", "evaluate", "fit", "merge", "plan", "report",
)
__all__ = ["TflmTrainError", "__version__", *_API]

__version__ = "0.1.0"


class VersionMismatchError(ImportError):
    """The installed tflite-micro is not the build our plugin was made for."""


def _check_tflite_micro() -> None:
    try:
        installed = _metadata.version("tflite-micro")
    except _metadata.PackageNotFoundError:
        raise VersionMismatchError(
            f"tflm-train needs tflite-micro=={TFLITE_MICRO_VERSION}, "
            "which is not installed (pip install -e . installs it)"
        ) from None
    if installed != TFLITE_MICRO_VERSION:
        raise VersionMismatchError(
            f"tflm-train needs tflite-micro=={TFLITE_MICRO_VERSION} but "
            f"{installed} is installed; its binary layout differs and would "
            f"crash the plugin (pip install tflite-micro=={TFLITE_MICRO_VERSION})"
        )


_check_tflite_micro()


def __getattr__(name: str):
    # PEP 562: the API (and numpy, the interpreter) load on first use.
    if name in _API:
        from tflm_train import api

        return getattr(api, name)
    raise AttributeError(f"module 'tflm_train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
