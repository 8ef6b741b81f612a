"""Parameter-efficient methods, one module each, and their registry.

A method module (lora.py, adapter.py, ...) holds the method's rewrite and one
MethodSpec (methods/base.py) that it registers here. Its `apply(rewrite,
targets)` replaces or adds operators in the main subgraph, allocates its
trainable tensors in the state layout, and lists the operators that now train
(rewrite.trainable_ops). Backward and optimizer ops are added afterwards by
the converter, the same way for every method.

Adding a method: a new module in this package that calls register(SPEC), and
its tests; every module here is imported below, in this order.
"""

from __future__ import annotations

import importlib
import pkgutil

from tflm_train.converter.errors import ConversionError
from tflm_train.converter.methods.base import MethodSpec

_REGISTRY: dict[str, MethodSpec] = {}
# Shown first in help and choices; any other module follows alphabetically.
_PREFERRED_ORDER = ("lora", "adapter", "bias", "head", "sparse")


def register(spec: MethodSpec) -> MethodSpec:
    """Adds a method; a second method of the same name is refused."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"method {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MethodSpec:
    """The method called `name`, or a ConversionError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConversionError(f"unknown method {name!r} (choose from {', '.join(names())})") from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def specs() -> tuple[MethodSpec, ...]:
    return tuple(_REGISTRY.values())


def _load_all() -> None:
    modules = sorted(
        (m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"),
        key=lambda n: (_PREFERRED_ORDER.index(n) if n in _PREFERRED_ORDER else len(_PREFERRED_ORDER), n),
    )
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")


_load_all()

__all__ = ["MethodSpec", "get", "names", "register", "specs"]
