"""Load the authors' released checkpoints (iffsid/mmvae ``save_model`` state_dicts) into mmvae_lite models.

The authors save ``model.state_dict()`` of their ``MNIST_SVHN`` and ``CUB_Image_Sentence_ft``
classes. Their layout differs from ours in names only, and in one structural detail: they keep
the two posterior heads (mean and scale) as separate layers (``fc21``/``fc22`` or ``c1``/``c2``),
which we fuse into one layer with twice the outputs (one matmul instead of two). The
conversion concatenates the two heads along the output dimension, mean first.

Usage::

    model = load_official("model.rar-extracted/model.pt", "mnist-svhn")        # a MultimodalVAE
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Union

import torch

from .checkpoint import FORMAT, LEGACY_FORMAT, CheckpointError, parameter_differences, torch_load
from .config import build_model, get_config
from .models import MultimodalVAE

StateDict = Mapping[str, torch.Tensor]
_Rule = Callable[[StateDict], torch.Tensor]


def _take(key: str) -> _Rule:
    return lambda sd: sd[key]


def _cat(a: str, b: str) -> _Rule:
    return lambda sd: torch.cat([sd[a], sd[b]], 0)


def _layers(ours: str, theirs: str, pairs: "list[tuple[object, object]]",
            params: tuple[str, ...] = ("weight", "bias")) -> dict[str, _Rule]:
    return {f"{ours}.{o}.{p}": _take(f"{theirs}.{t}.{p}") for o, t in pairs for p in params}


def _heads(ours: str, theirs_mu: str, theirs_scale: str) -> dict[str, _Rule]:
    return {f"{ours}.{p}": _cat(f"{theirs_mu}.{p}", f"{theirs_scale}.{p}") for p in ("weight", "bias")}


def _prior() -> dict[str, _Rule]:
    return {"prior.loc": lambda sd: sd["_pz_params.0"].reshape(-1),
            "prior.logits": lambda sd: sd["_pz_params.1"].reshape(-1)}


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _mnist_svhn_rules() -> dict[str, _Rule]:
    r = _prior()
    m, s = "modalities.mnist", "modalities.svhn"
    r.update(_layers(f"{m}.encoder.body", "vaes.0.enc.enc", [(1, "0.0")]))
    r.update(_heads(f"{m}.encoder.heads", "vaes.0.enc.fc21", "vaes.0.enc.fc22"))
    r.update(_layers(f"{m}.decoder.net", "vaes.0.dec", [(0, "dec.0.0"), (2, "fc3")]))
    r.update(_layers(f"{s}.encoder.body", "vaes.1.enc.enc", [(0, 0), (2, 2), (4, 4)]))
    r.update(_heads(f"{s}.encoder.heads", "vaes.1.enc.c1", "vaes.1.enc.c2"))
    r.update(_layers(f"{s}.decoder.net", "vaes.1.dec.dec", [(i, i) for i in (0, 2, 4, 6)]))
    return r


def _cub_features_rules() -> dict[str, _Rule]:
    r = _prior()
    i, t = "modalities.image", "modalities.sentence"
    r.update(_layers(f"{i}.encoder.body", "vaes.0.enc", [(0, "layer0.0"), (2, "layer1.0"), (4, "layer2.0")]))
    r.update(_heads(f"{i}.encoder.heads", "vaes.0.enc.fc21", "vaes.0.enc.fc22"))
    r.update(_layers(f"{i}.decoder.net", "vaes.0.dec",
                     [(0, "dec.out_t.0"), (2, "dec.layer1_t.0"), (4, "dec.layer2_t.0"), (6, "fc31")]))
    r[f"{t}.encoder.embedding.weight"] = _take("vaes.1.enc.embedding.weight")
    convs, bns = [0, 3, 6, 9, 12], [1, 4, 7, 10, 13]
    r.update(_layers(f"{t}.encoder.body", "vaes.1.enc.enc", [(c, c) for c in convs]))
    r.update(_layers(f"{t}.encoder.body", "vaes.1.enc.enc", [(b, b) for b in bns], _BN))
    r.update(_heads(f"{t}.encoder.heads", "vaes.1.enc.c1", "vaes.1.enc.c2"))
    r.update(_layers(f"{t}.decoder.net", "vaes.1.dec.dec", [(c, c) for c in (0, 3, 6, 9, 12, 15)]))
    r.update(_layers(f"{t}.decoder.net", "vaes.1.dec.dec", [(b, b) for b in (1, 4, 7, 10, 13)], _BN))
    r[f"{t}.decoder.to_vocab.weight"] = _take("vaes.1.enc.embedding.weight")   # tied, as theirs
    r[f"{t}.decoder.to_vocab.bias"] = _take("vaes.1.dec.toVocabSize.bias")
    return r


_RULES: dict[str, Callable[[], dict[str, _Rule]]] = {"mnist-svhn": _mnist_svhn_rules,
                                                     "cub-features": _cub_features_rules}
# Keys of theirs that carry nothing we use: per-VAE priors unused by the joint model, and the
# sentence decoder's output weight, which is tied to (the same tensor as) the word embedding.
_IGNORED_PREFIXES = ("vaes.0._pz_params", "vaes.1._pz_params", "vaes.1.dec.toVocabSize.weight")


def convert_official_state_dict(state_dict: StateDict, experiment: str = "mnist-svhn") -> dict[str, torch.Tensor]:
    """Rename (and fuse the heads of) an authors' state_dict into mmvae_lite's layout.

    Raises ``KeyError`` naming the missing keys if the dict is not of that experiment's layout, and
    ``ValueError`` naming unused keys (so a wrong file is never half-loaded silently).
    """
    if experiment not in _RULES:
        raise ValueError(f"no official checkpoint layout for {experiment!r}; known: {sorted(_RULES)}")
    rules = _RULES[experiment]()
    needed = {k for rule_key in rules for k in _keys_read(rules[rule_key], state_dict)}
    out = {}
    missing = []
    for ours, rule in rules.items():
        try:
            out[ours] = rule(state_dict)
        except KeyError as e:
            missing.append(str(e).strip("'\""))
    if missing:
        raise KeyError(f"not an authors' {experiment} checkpoint: missing {sorted(set(missing))[:6]}"
                       f"{' ...' if len(set(missing)) > 6 else ''}")
    unused = [k for k in state_dict if k not in needed and not k.startswith(_IGNORED_PREFIXES)]
    if unused:
        raise ValueError(f"keys of the checkpoint that no mmvae_lite parameter takes: {unused[:6]}")
    return out


def _keys_read(rule: _Rule, sd: StateDict) -> list[str]:
    seen: list[str] = []

    class Spy(dict):
        def __getitem__(self, k):
            seen.append(k)
            return sd[k]
    try:
        rule(Spy())
    except KeyError:
        pass
    return seen


def load_official(source: "Union[str, Path, StateDict]", experiment: str = "mnist-svhn", **overrides
                  ) -> MultimodalVAE:
    """An mmvae_lite model with the weights of an authors' checkpoint (a path or a state_dict).

    ``overrides`` go to :func:`~mmvae_lite.config.get_config` (for CUB, ``vocab_size`` is read from
    the checkpoint's embedding). Loading uses ``weights_only=True``. A file that is not an authors'
    checkpoint of ``experiment`` raises :class:`~mmvae_lite.checkpoint.CheckpointError` (a
    ``ValueError``) naming the file and what is missing.
    """
    if experiment not in _RULES:
        raise ValueError(f"no official checkpoint layout for {experiment!r}; known: {sorted(_RULES)}")
    where = str(source) if isinstance(source, (str, Path)) else "the state_dict given"
    sd = torch_load(source, "authors' checkpoint") if isinstance(source, (str, Path)) else source
    if isinstance(sd, Mapping) and "state_dict" in sd and not any(str(k).startswith("vaes.") for k in sd):
        sd = sd["state_dict"]
    if isinstance(sd, Mapping) and sd.get("format") in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{where} is an mmvae_lite trainer checkpoint, not one of the authors': resume it with "
                              f"Trainer.load(path), or load its weights with mmvae_lite.checkpoint.load_weights(model, path)")
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where} is not an authors' checkpoint: expected a state_dict of tensors, "
                              f"got {type(sd).__name__}")
    try:
        converted = convert_official_state_dict(sd, experiment)
    except KeyError as e:
        raise CheckpointError(f"{where}: {e.args[0] if e.args else e}") from None
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    latent_dim = converted["prior.logits"].numel()
    if experiment == "cub-features":
        overrides.setdefault("vocab_size", converted["modalities.sentence.encoder.embedding.weight"].shape[0])
    cfg = get_config(experiment, "paper", latent_dim=latent_dim, **overrides)
    model = build_model(cfg)
    problems = parameter_differences(converted, model)
    if problems:
        raise CheckpointError(f"{where} does not fit the {experiment} model: " + "; ".join(problems))
    model.load_state_dict(converted, strict=True)
    return model.eval()


__all__ = ["convert_official_state_dict", "load_official"]
