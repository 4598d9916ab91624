"""What the metrics accept: argument values and model kinds, checked at the entry points.

Every public function of :mod:`mmvae_lite.evaluation` (and the model-taking plots of
:mod:`mmvae_lite.plotting`) checks its arguments here before it touches the model, so that a bad
size gives a :class:`ValueError` naming the argument and the values accepted, and a model of the
wrong kind a :class:`TypeError` naming the kinds accepted, instead of NaN, 0.0, a
``ZeroDivisionError`` or an ``AttributeError`` from deep inside.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable, Optional, Sequence, Union

from ..models import MultimodalVAE, VAE

Model = Union[VAE, MultimodalVAE]
PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Model", "PathLike", "check_int", "check_ints", "check_choice", "check_positive", "model_names",
           "require_multimodal", "modality_of"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int = 1, *, none: bool = False) -> Optional[int]:
    """``value`` as an int >= ``minimum`` (or None where ``none``); else ValueError naming ``name``."""
    if value is None and none:
        return None
    if not _is_int(value) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if none else "")
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return int(value)


def check_ints(values: Any, name: str, minimum: int = 1) -> list[int]:
    """A non-empty sequence of ints >= ``minimum`` (e.g. the ``Ks`` of a sweep)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    out = list(values)
    if not out or not all(_is_int(v) and v >= minimum for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    return [int(v) for v in out]


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0 (a span, a regularisation strength)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _kind(model: Any) -> str:
    return "a single-modality VAE" if isinstance(model, VAE) else f"a {type(model).__name__}"


def model_names(model: Any, fn: str) -> list[str]:
    """The modality names of a :class:`VAE` (its one name) or a :class:`MultimodalVAE`."""
    if isinstance(model, MultimodalVAE):
        return model.names
    if isinstance(model, VAE):
        return [model.name]
    raise TypeError(f"{fn} takes a VAE or a MultimodalVAE (MMVAE or MVAE), got {_kind(model)}")


def require_multimodal(model: Any, fn: str, why: str = "") -> MultimodalVAE:
    """``model`` if it is a :class:`MultimodalVAE`; else a TypeError saying which kinds are accepted."""
    if isinstance(model, MultimodalVAE):
        return model
    raise TypeError(f"{fn} takes a MultimodalVAE (MMVAE or MVAE), got {_kind(model)}" + (f": {why}" if why else ""))


def modality_of(model: Model, name: str):
    """The :class:`~mmvae_lite.models.Modality` called ``name`` of either kind of model."""
    return model.modalities[name] if isinstance(model, MultimodalVAE) else model.modality
