"""The converter's user-facing error (tflm_train.errors holds the base class)."""

from __future__ import annotations

from tflm_train.errors import TflmTrainError


class ConversionError(TflmTrainError, ValueError):
    """The model cannot be converted as asked (message says why)."""
