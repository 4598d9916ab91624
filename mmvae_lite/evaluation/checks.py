"""What the metrics accept: argument values and model kinds, checked at the entry points.

Every public function of :mod:`mmvae_lite.evaluation` (and the model-taking plots of
:mod:`mmvae_lite.plotting`) checks its arguments here before it touches the model, so that a bad
size gives a :class:`ValueError` naming the argument and the values accepted, and a model of the
wrong kind a :class:`TypeError` naming the kinds accepted, instead of NaN, 0.0, a
``ZeroDivisionError`` or an ``AttributeError`` from deep inside.
"""
from __future__ import annotations

import os
from typing import Any, Union

from ..checks import check_choice, check_int, check_ints, check_positive  # noqa: F401 (re-exported)
from ..models import MultimodalVAE, VAE

Model = Union[VAE, MultimodalVAE]
PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Model", "PathLike", "check_int", "check_ints", "check_choice", "check_positive", "model_names",
           "require_multimodal", "modality_of"]


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
