"""`tf` and `keras` names that import TensorFlow on first use.

Helper modules (cnn_models.py) and test modules that mix TensorFlow tests
(marked `tf`) with tests that must run without TensorFlow import these instead
of `import tensorflow as tf`, so that importing the module does not import
TensorFlow; only a test that touches `tf.` does (conftest.py fails a test not
marked `tf` that does).
"""

from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, load):
        self._load = load

    def __getattr__(self, name):
        return getattr(self._load(), name)


def _tensorflow():
    return importlib.import_module("tensorflow")


tf = _Lazy(_tensorflow)
keras = _Lazy(lambda: _tensorflow().keras)
