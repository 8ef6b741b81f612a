"""Loads tflm-train's kernel library into the process for the TFLM interpreter.

The tflite-micro wheel finds custom-op registerers with dlsym over the whole
process, so the library must be loaded with RTLD_GLOBAL before an interpreter
is created. Nothing outside this module knows the library's path or the
registerer's name.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import tflm_train
from tflm_train._pins import TFLITE_MICRO_VERSION

REGISTERER = "TflmTrainRegisterOps"
_LIBRARY_NAME = "libtflm_train_ops.so"


from tflm_train.errors import TflmTrainError  # the base of every user-fixable error


class PluginError(TflmTrainError, RuntimeError):
    """The kernel library is missing or was built for another interpreter."""


def _candidates() -> list[Path]:
    override = os.environ.get("TFLMT_PLUGIN")
    if override:
        return [Path(override)]
    # Every directory of the package: in an editable install the compiled
    # library sits in site-packages while the sources stay in the checkout.
    return [Path(p) / "_lib" / _LIBRARY_NAME for p in tflm_train.__path__]


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """The loaded kernel library (loaded once, RTLD_GLOBAL)."""
    for path in _candidates():
        if path.is_file():
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            break
    else:
        raise PluginError(
            f"{_LIBRARY_NAME} not found (looked in "
            f"{', '.join(str(p.parent) for p in _candidates())}); "
            "reinstall with: pip install -e ."
        )
    lib.tflmt_wheel_version.restype = ctypes.c_char_p
    lib.tflmt_op_count.restype = ctypes.c_int
    lib.tflmt_op_name.restype = ctypes.c_char_p
    lib.tflmt_op_name.argtypes = [ctypes.c_int]
    lib.tflmt_last_errors.restype = ctypes.c_char_p
    built_for = lib.tflmt_wheel_version().decode()
    if built_for != TFLITE_MICRO_VERSION:
        raise PluginError(
            f"{path} was built for tflite-micro {built_for}, this package "
            f"needs {TFLITE_MICRO_VERSION}; reinstall with: pip install -e ."
        )
    return lib


def op_names() -> list[str]:
    """Names of the custom ops the library provides."""
    lib = library()
    return [lib.tflmt_op_name(i).decode() for i in range(lib.tflmt_op_count())]


def clear_errors() -> None:
    library().tflmt_clear_errors()


def take_errors() -> str:
    """Messages our kernels logged since the last clear (then clears them)."""
    lib = library()
    text = lib.tflmt_last_errors().decode(errors="replace")
    lib.tflmt_clear_errors()
    return text
