"""tflm-train: TFLM models that fine-tune themselves on the device.

The converter (tflm_train.converter) rewrites a .tflite so that training is
part of the model; the kernels in tflm_ops/ run it inside the stock TFLM
interpreter. This package drives the tflite-micro x86 interpreter on a host.
"""

from importlib import metadata as _metadata

from tflm_train._pins import TFLITE_MICRO_VERSION

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
