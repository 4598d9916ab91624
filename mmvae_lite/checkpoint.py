"""Checkpoint files: the trainer checkpoint format, and the checks made before a file touches a model.

A trainer checkpoint (written by :meth:`~mmvae_lite.training.Trainer.save`) is a dict that
``torch.load(..., weights_only=True)`` reads (tensors, numbers, strings, lists and dicts: no code):

==============  ==============================================================================
key             value
==============  ==============================================================================
``format``      ``"mmvae_lite.trainer"``
``version``     ``1`` (:data:`VERSION`)
``model``       the model's ``state_dict()`` (parameter names and shapes are read from it)
``optimizer``   the optimiser's ``state_dict()`` (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``...)
``epoch``       epochs done; ``step``: optimiser steps done
``history``     one dict per epoch: ``epoch``, ``train``, ``test``, ``seconds``
``torch_rng``   the CPU RNG state (``cuda_rng``: the CUDA ones, when CUDA is present)
``config``      the run's configuration (``Config.to_dict()`` from the command line; else what was given)
``model_info``  :func:`model_info`: class, kind (vae/mmvae/mvae), modalities, event shapes, latent size, family
``trainer``     the training settings: objective, K, eval objective, eval_K, batch size, seed, lr, amsgrad,
                warm-up steps
``scheduler``   only with a learning-rate warm-up: the ``LinearLR`` scheduler's ``state_dict()``
==============  ==============================================================================

Version 0 is the format written before checkpoints carried a version: ``format ==
"mmvae_lite/1"``, no ``version``, ``model_info`` or ``trainer``. It loads (its model kind and
experiment are then read from ``config``).

Every check runs before anything is loaded, so a refused file leaves the model and the optimiser
as they were; a refusal names the file and what differs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn

from .models import MultimodalVAE, VAE

FORMAT = "mmvae_lite.trainer"
VERSION = 1
LEGACY_FORMAT = "mmvae_lite/1"      # version 0
SHIPPED_FORMAT = "mmvae_lite/weights"   # a shipped model's weights (mmvae_lite.reference), a warm start's other source
REQUIRED = ("model", "optimizer", "epoch", "step", "history", "torch_rng")
"""Keys every trainer checkpoint has, of every version."""


class CheckpointError(ValueError):
    """A file is not a (compatible) checkpoint; the message names the file and the problem."""


def torch_load(path: "str | Path", what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    torch reports a truncated file as a zip "central directory" error, a text file as ``KeyError``
    and any non-tensor object as an ``UnpicklingError`` that suggests ``weights_only=False``; all
    become a :class:`CheckpointError` saying the file is not a readable ``what``.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"a {what} path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; expected a {what} file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:   # torch raises RuntimeError, UnpicklingError, EOFError, KeyError... for bad files
        raise CheckpointError(f"{path} is not a readable {what} ({path.stat().st_size} bytes): "
                              f"{_load_failure(e)}") from None


def _load_failure(e: Exception) -> str:
    text = str(e)
    if isinstance(e, EOFError) or not text:
        return "the file is empty or ends early"
    if "central directory" in text or "zip archive" in text:
        return "truncated or corrupt (its zip archive is incomplete)"
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global.*)?$", text, re.M | re.S)
    if found:
        detail = found.group(1).strip().splitlines()[0]
        if detail.startswith("Unsupported global"):
            return (f"it holds Python objects, not only tensors ({detail}); mmvae_lite files load without "
                    f"unpickling code")
        return f"not a torch file ({detail})"
    if isinstance(e, (KeyError, ValueError)) or "pickle" in type(e).__name__.lower():
        return "not a torch file"
    return text.splitlines()[0]


def model_info(model: nn.Module) -> dict[str, Any]:
    """What kind of model this is, in plain values: class, kind, modalities, event shapes, latent size, family."""
    info: dict[str, Any] = {"class": type(model).__name__}
    rule = getattr(getattr(model, "joint_rule", None), "name", None)
    if isinstance(model, MultimodalVAE):
        mods = list(model.modalities.values())
        info["kind"] = {"moe": "mmvae", "poe": "mvae"}.get(rule, rule)
    elif isinstance(model, VAE):
        mods = [model.modality]
        info["kind"] = "vae"
    else:
        return info
    info["modalities"] = [m.name for m in mods]
    info["event_shapes"] = {m.name: list(m.event_shape) for m in mods}
    prior = getattr(model, "prior", None)
    if prior is not None:
        info["latent_dim"] = int(prior.latent_dim)
        info["family"] = str(prior.family)
    return info


def _is_bare_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: "str | Path", map_location: Any = "cpu") -> dict[str, Any]:
    """A trainer checkpoint's dict, with ``version`` set (0 for the unversioned format).

    Raises :class:`CheckpointError` naming the file when it is unreadable, not a trainer
    checkpoint (bare weights point to :func:`load_weights`), of a newer version, or incomplete.
    """
    state = torch_load(path, "checkpoint", map_location)
    path = Path(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not an mmvae_lite trainer checkpoint")
    fmt = state.get("format")
    if fmt == FORMAT:
        version = state.get("version")
        if not isinstance(version, int) or version < 1:
            raise CheckpointError(f"{path}: checkpoint version {version!r} is not valid (expected 1..{VERSION})")
        if version > VERSION:
            raise CheckpointError(f"{path} is a version-{version} checkpoint, written by a newer mmvae_lite; "
                                  f"this one reads versions 0..{VERSION}: upgrade mmvae_lite")
    elif fmt == LEGACY_FORMAT and "version" not in state:
        version = 0
    elif _is_bare_state_dict(state):
        official = any(str(k).startswith("vaes.") for k in state)
        hint = ("mmvae_lite.official.load_official(path, experiment)" if official
                else "mmvae_lite.checkpoint.load_weights(model, path)")
        raise CheckpointError(f"{path} holds bare model weights ({len(state)} tensors{', in the authors layout' if official else ''}), "
                              f"not a trainer checkpoint (no optimiser, epoch or RNG state to resume from): "
                              f"load them into a model with {hint}")
    else:
        raise CheckpointError(f"{path} is not an mmvae_lite trainer checkpoint: format {fmt!r}, expected {FORMAT!r}"
                              f" (keys: {sorted(map(str, state))[:8]})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: an incomplete version-{version} checkpoint, missing {missing}")
    if not isinstance(state["model"], Mapping) or not isinstance(state["optimizer"], Mapping):
        raise CheckpointError(f"{path}: 'model' and 'optimizer' must be state dicts")
    out = dict(state)
    out["version"] = version
    return out


# -------------------------------------------------------------------------------------------
# Compatibility checks (nothing is loaded until all pass)
# -------------------------------------------------------------------------------------------
def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def parameter_differences(saved: Mapping[str, Any], model: nn.Module, limit: int = 6) -> list[str]:
    """What differs between a saved ``state_dict`` and a model: missing/unexpected names, shapes."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    if missing:
        problems.append(f"missing {len(missing)} of the model's tensors: {missing[:limit]}{' ...' if len(missing) > limit else ''}")
    if extra:
        problems.append(f"{len(extra)} tensors the model does not have: {extra[:limit]}{' ...' if len(extra) > limit else ''}")
    shapes = [f"{k}: saved {_shape(saved[k])}, model {_shape(v)}" for k, v in own.items()
              if k in saved and _shape(saved[k]) != _shape(v)]
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: " + "; ".join(shapes[:limit]) + (" ..." if len(shapes) > limit else ""))
    return problems


_ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def optimizer_differences(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> list[str]:
    """Whether a saved optimiser state fits this optimiser's parameters (groups, counts, moment shapes)."""
    groups, own = saved.get("param_groups"), optimizer.param_groups
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) and "params" in g for g in groups):
        return ["the optimiser state has no valid param_groups"]
    if len(groups) != len(own):
        return [f"the optimiser state has {len(groups)} parameter groups, this optimiser {len(own)}"]
    problems = []
    params: dict[Any, torch.Tensor] = {}
    for i, (g, o) in enumerate(zip(groups, own)):
        if len(g["params"]) != len(o["params"]):
            problems.append(f"optimiser group {i} holds {len(g['params'])} parameters, this model trains {len(o['params'])}")
            continue
        params.update(zip(g["params"], o["params"]))
    if problems:
        return problems
    adam = isinstance(optimizer, torch.optim.Adam)
    for idx, st in (saved.get("state") or {}).items():
        if idx not in params:
            problems.append(f"the optimiser state names parameter {idx!r}, which no group holds")
            continue
        if adam and not all(k in st for k in _ADAM_KEYS):
            problems.append(f"the optimiser state of parameter {idx} is not Adam's (keys {sorted(st)})")
            continue
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(params[idx].shape):
                problems.append(f"optimiser '{k}' of parameter {idx}: saved {tuple(v.shape)}, "
                                f"parameter {tuple(params[idx].shape)}")
                break
    return problems[:6]


def _kind_name(kind: Optional[str]) -> str:
    return {"mmvae": "an MMVAE", "mvae": "an MVAE", "vae": "a VAE"}.get(str(kind), f"a {kind!r} model")


def model_differences(state: Mapping[str, Any], model: nn.Module, config: Mapping[str, Any]) -> list[str]:
    """Experiment, model kind, modalities and latent family of a checkpoint against a model (and its config)."""
    saved_cfg = state.get("config") or {}
    problems = []
    exp_saved, exp_now = saved_cfg.get("experiment"), (config or {}).get("experiment")
    if exp_saved is not None and exp_now is not None and exp_saved != exp_now:
        problems.append(f"experiment: the checkpoint is of {exp_saved!r}, this trainer's config of {exp_now!r}")
    now = model_info(model)
    saved = state.get("model_info") or {}
    kind_saved = saved.get("kind", saved_cfg.get("model"))
    kind_now = now.get("kind", (config or {}).get("model"))
    if kind_saved is not None and kind_now is not None and kind_saved != kind_now:
        problems.append(f"model: the checkpoint holds {_kind_name(kind_saved)} ({kind_saved!r}), "
                        f"this trainer's model is {_kind_name(kind_now)} ({kind_now!r})")
    for key in ("modalities", "event_shapes", "latent_dim", "family"):
        if key in saved and key in now and saved[key] != now[key]:
            problems.append(f"{key}: saved {saved[key]}, model {now[key]}")
    return problems


def training_differences(state: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """Training settings (objective, K, batch size, seed, lr...) that differ from the checkpoint's."""
    saved = state.get("trainer") or {}
    return [f"{k}: saved {saved[k]!r}, now {v!r}" for k, v in settings.items()
            if k in saved and _comparable(saved[k]) != _comparable(v)]


def _comparable(value: Any) -> Any:
    """A setting as compared on resume. Older checkpoints name a partial objective by its repr, with a
    memory address that differs in every process ("functools.partial(<function m_dreg_stratified at
    0x7f...>, gradient='dreg')"): read as ``m_dreg_stratified(gradient='dreg')``, today's name."""
    if isinstance(value, str):
        m = re.fullmatch(r"functools\.partial\(<function (\w+) at 0x[0-9a-f]+>(?:, (.*))?\)", value)
        if m:
            return f"{m.group(1)}({m.group(2) or ''})"
    return value


# -------------------------------------------------------------------------------------------
# Bare weights
# -------------------------------------------------------------------------------------------
def load_weights(model: nn.Module, source: "Union[str, Path, Mapping[str, torch.Tensor]]") -> nn.Module:
    """Load model weights only: a bare ``state_dict`` (a file or a dict) or the ``model`` entry of a
    trainer checkpoint. Names and shapes are checked first; the error lists what differs.

    For a full resume (optimiser, epoch, RNG) use :meth:`~mmvae_lite.training.Trainer.load`; for
    the authors' released files, :func:`~mmvae_lite.official.load_official`.
    """
    where = "the state_dict given"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = torch_load(source, "weights file")
    if not isinstance(source, Mapping):
        raise CheckpointError(f"{where} holds a {type(source).__name__}, not a state_dict of tensors")
    if source.get("format") in (FORMAT, LEGACY_FORMAT) and isinstance(source.get("model"), Mapping):
        source = source["model"]
    if any(str(k).startswith("vaes.") for k in source):
        raise CheckpointError(f"{where} is in the authors' (iffsid/mmvae) layout: use "
                              f"mmvae_lite.official.load_official(path, experiment)")
    problems = parameter_differences(source, model)
    if problems:
        raise CheckpointError(f"{where} does not fit this {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(source)
    return model


def config_differences(state: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Experiment, model kind and latent size of a checkpoint's config against a config: the checks a
    warm start can make before any data are loaded or any model is built."""
    saved = state.get("config") or {}
    return [f"{key}: the checkpoint's is {saved[key]!r}, this run's {config[key]!r}"
            for key in ("experiment", "model", "latent_dim")
            if saved.get(key) is not None and config.get(key) is not None and saved[key] != config[key]]


def snapshot_name(epoch: int) -> str:
    """File name of a run's snapshot after ``epoch`` epochs (``--snapshots``): ``epoch07.pt``, ``epoch100.pt``."""
    return f"epoch{epoch:02d}.pt"


def snapshots(run_dir: "str | Path") -> list[Path]:
    """The snapshots in a run folder in epoch order (``epoch100.pt`` after ``epoch99.pt``, which a
    sort by name would put after ``epoch10.pt``)."""
    found = [(p, p.stem[len("epoch"):]) for p in Path(run_dir).glob("epoch*.pt")]
    return [p for p, n in sorted((x for x in found if x[1].isdigit()), key=lambda x: int(x[1]))]


def read_start(path: "str | Path") -> dict[str, Any]:
    """The weights a warm start (``--init-from``) begins from, as a trainer checkpoint's dict.

    ``path`` is a trainer checkpoint (``checkpoint.pt``, ``epochNN.pt``) or a shipped model: its
    ``results/<name>/`` folder or a ``weights*.pt`` file in it. A shipped model's weights come back
    in float32, its ``epoch`` and ``history`` from the ``metrics.json`` beside them, and that record
    itself under ``"shipped"`` (the training it had before, for the new run's record).
    """
    path = Path(path)
    if not path.is_dir():
        blob = torch_load(path, "checkpoint")
        if not (isinstance(blob, Mapping) and blob.get("format") == SHIPPED_FORMAT):
            return read_checkpoint(path)
        path = path.parent
    from .reference.registry import PretrainedError, load_weights as load_shipped
    try:
        cfg, state, _ = load_shipped(path)
    except PretrainedError as e:
        raise CheckpointError(f"{path} is a folder but not a shipped model's: {e}") from e
    metrics = path / "metrics.json"
    record = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return {"model": state, "config": cfg.to_dict(), "epoch": int(record.get("epochs") or 0),
            "history": record.get("history") or [], "shipped": record}


def warm_start(model: nn.Module, path: "str | Path", config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Load the model weights of another run's trainer checkpoint into ``model`` (a warm start).

    Unlike a resume, nothing else is taken over (optimiser, epoch, RNG, settings), so the new run may
    use another K, batch size or learning rate. ``path`` may also be a shipped model (see
    :func:`read_start`). The checkpoint must hold the same experiment, model kind and modalities
    (checked before anything is loaded). Returns the checkpoint's dict, whose ``history`` says how
    much training the weights already had.
    """
    state = read_start(path)
    problems = model_differences(state, model, config or {})
    if problems:
        raise CheckpointError(f"{path} cannot start this model: " + "; ".join(problems))
    load_weights(model, state["model"])
    return state


__all__ = ["FORMAT", "VERSION", "LEGACY_FORMAT", "CheckpointError", "read_checkpoint", "load_weights",
           "model_info", "torch_load", "parameter_differences", "optimizer_differences", "model_differences",
           "training_differences", "config_differences", "read_start", "warm_start"]
