"""Training data: numpy .npz files with `x` and `y`.

x holds N samples shaped like the model input without its batch dimension,
as real values (int8 models get them quantized with the input's own scale).
y holds N integer class labels (cross-entropy, accuracy), or N float
targets shaped like the model output without its batch dimension (MSE /
binary cross-entropy). Anything else is refused with one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


from tflm_train.errors import TflmTrainError  # the base of every user-fixable error


class DataError(TflmTrainError, ValueError):
    """The data does not fit the model (message says how)."""


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_npz(path: str | Path) -> Dataset:
    """Reads x and y from an .npz; any problem is one DataError line."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an .npz file") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises whatever the bytes cause
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        # np.load also reads a single .npy array (or a memmap of one).
        raise DataError(
            f"{path}: is a single .npy array; the data must be an .npz with arrays x and y "
            "(numpy.savez(path, x=samples, y=labels))"
        )
    try:
        with loaded as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(f"{path}: needs arrays 'x' and 'y' (has {', '.join(repr(name) for name in archive.files) or 'none'})")
            x, y = archive["x"], archive["y"]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt member: zlib, zipfile, numpy header errors, ...
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None
    for name, array in (("x", x), ("y", y)):
        if array.ndim == 0:
            raise DataError(f"{path}: '{name}' is a single value (0-d array); it must hold one entry per sample")
        if array.dtype.fields is not None:
            raise DataError(f"{path}: '{name}' is a structured array ({array.dtype}); it must be a plain numeric array")
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise DataError(f"{path}: no samples")
    return Dataset(x, y)


def check_inputs(data: Dataset, sample_shape: tuple[int, ...], path: str = "data") -> np.ndarray:
    """x as float32 shaped (N, *sample_shape)."""
    x = data.x
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: x must be numeric, not {x.dtype}")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        if int(np.prod(x.shape[1:])) == int(np.prod(sample_shape)):
            x = x.reshape((len(x),) + tuple(sample_shape))
        else:
            raise DataError(
                f"{path}: each x sample is {tuple(x.shape[1:])} but the model input is {tuple(sample_shape)}"
            )
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x contains NaN or infinite values")
    return x


def check_labels(data: Dataset, classes: int, path: str = "data") -> np.ndarray:
    """y as int32 class indices in [0, classes)."""
    y = np.asarray(data.y)
    if int(np.prod(y.shape[1:])) != 1:
        raise DataError(f"{path}: y must hold one class label per sample, not {tuple(data.y.shape[1:])}")
    y = y.reshape(len(y))
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{path}: y must hold integer class labels for a classifier")
    elif not np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_:
        raise DataError(f"{path}: y must hold integer class labels, not {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= classes:
        raise DataError(f"{path}: labels must lie in [0, {classes}); found {y.min()}..{y.max()}")
    return y.astype(np.int32)


def check_targets(data: Dataset, target_shape: tuple[int, ...], path: str = "data") -> np.ndarray:
    """y as float32 shaped (N, *target_shape)."""
    y = np.asarray(data.y)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: y must be numeric, not {y.dtype}")
    if int(np.prod(y.shape[1:])) != int(np.prod(target_shape)):
        raise DataError(f"{path}: each y target is {tuple(y.shape[1:])} but the model output is {tuple(target_shape)}")
    y = y.reshape((len(y),) + tuple(target_shape)).astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise DataError(f"{path}: y contains NaN or infinite values")
    return y
