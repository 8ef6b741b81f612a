"""Writing a command's output files: all of them or none.

A command makes every byte of every output first, then checks that each
destination can be written (by creating a temporary file beside it), and
only then writes them, each atomically (write_atomic). So a failure - bad
input, an unwritable --plot path - never leaves some outputs written and
others not.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from tflm_train.errors import UserError


def check_writable(path: str | os.PathLike) -> None:
    """Raises UserError unless a file can be written at path."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".check", dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def write_all(files: dict[str, bytes]) -> None:
    """Writes every path -> bytes, after checking that all can be written."""
    from tflm_train.converter.model_ir import write_atomic

    for path in files:
        check_writable(path)
    for path, data in files.items():
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def finite_or_none(value):
    """The value with every non-finite float (NaN, inf) replaced by None,
    through dicts, lists and tuples: JSON has no token for them."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0):
        number = value.item() if hasattr(value, "item") else value
        if isinstance(number, float) and not math.isfinite(number):
            return None
        return number
    return value


def strict_json(payload) -> str:
    """Standard JSON (RFC 8259): non-finite numbers become null."""
    return json.dumps(finite_or_none(payload), allow_nan=False)
