"""Versions this build of tflm-train is bound to.

The C++ plugin reads the tflite-micro interpreter's memory directly
(tflm_ops/port/wheel/wheel_abi.h), so it works with exactly one wheel build.
pyproject.toml pins the same version; tests/test_plugin.py keeps them equal.
"""

TFLITE_MICRO_VERSION = "0.dev20261023182759"
