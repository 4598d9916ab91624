r"""Gradient signal-to-noise ratios with common random numbers, and their standard errors.

Every estimator is evaluated on the *same* reparameterisation noise (the RNG is reseeded before
each one), so differences between estimators are not Monte Carlo noise: at K = 1 DReG and STL are
the same estimator (:math:`\tilde w_1 = 1`) and give identical gradients, hence identical SNRs.

Draws are batched: the input is repeated ``per_block`` times, and since objectives average over
the batch and every row draws its own samples, one backward pass gives the mean :math:`m_j` of
``per_block`` independent gradient draws. From ``blocks`` such block means, for a group of
parameters (``encoder``: every encoder; ``decoder``: decoders and prior),

.. math:: \mathrm{SNR} = \frac{\|\mathbb{E} g\|}{\sqrt{\operatorname{tr}\operatorname{Cov} g}},\qquad
          \widehat{\|\mathbb{E} g\|^2} = \frac{1}{J(J-1)}\sum_{i\ne j} m_i^\top m_j,\quad
          \widehat{\operatorname{tr}\operatorname{Cov} g} = \frac{b}{J-1}\sum_j \|m_j - \bar m\|^2,

both unbiased, so the ratio has no noise floor (the per-parameter average of |mean| / sd used by
``mmvae_lite.evaluation.gradient_snr`` stays near :math:`1/\sqrt{n}` for parameters with no signal,
which masks trends). Its standard error is a delete-one-block jackknife.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import pandas as pd
import torch

from ..models import MultimodalVAE, VAE
from .moe import m_dreg_stratified, m_iwae_stratified
from .unbiased import m_dreg_stratified_unbiased
from .unimodal import dreg, iwae

_VAE_ESTIMATORS: dict[str, Callable] = {"iwae": iwae, "stl": partial(dreg, gradient="stl"), "dreg": dreg}
_MOE_ESTIMATORS: dict[str, Callable] = {"iwae": m_iwae_stratified, "stl": partial(m_dreg_stratified, gradient="stl"),
                                        "dreg": m_dreg_stratified, "dreg_unbiased": m_dreg_stratified_unbiased}


def param_groups(model: "VAE | MultimodalVAE") -> dict[str, list[torch.nn.Parameter]]:
    """Encoder parameters (phi) and the rest (theta: decoders, prior), each parameter once (an
    embedding tied between an encoder and a decoder counts as the encoder's)."""
    mods = [model.modality] if isinstance(model, VAE) else list(model.modalities.values())
    enc = list({id(p): p for m in mods for p in m.encoder.parameters() if p.requires_grad}.values())
    ids = {id(p) for p in enc}
    dec = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return {"encoder": enc, "decoder": dec}


def _snr(m: torch.Tensor) -> float:
    """Group SNR from J block means m (J, P) of b draws each (the b cancels in the ratio up to the factor)."""
    J = m.shape[0]
    tot = m.sum(0)
    mean_sq = (tot @ tot - (m * m).sum()) / (J * (J - 1))           # sum_{i != j} m_i . m_j / (J (J-1))
    spread = ((m - m.mean(0)) ** 2).sum() / (J - 1)                 # tr Cov(m_j) = tr Cov(g) / b
    return float(mean_sq.clamp_min(0).sqrt() / spread.sqrt()) if spread > 0 else float("nan")


def crn_gradient_snr(model: "VAE | MultimodalVAE", x, Ks: Sequence[int] = (1, 4, 16, 64, 256),
                     estimators: Sequence[str] = ("iwae", "stl", "dreg"), blocks: int = 20,
                     per_block: int = 10, seed: int = 0) -> pd.DataFrame:
    """SNR of each estimator's encoder and decoder gradients at each K, on common random numbers.

    ``x``: one example, a tensor (or one-entry batch) for a :class:`VAE`, a batch dict for an MoE
    :class:`MultimodalVAE` (estimators of eq. 3, plus ``"dreg_unbiased"``). ``blocks * per_block``
    draws per estimator and K. Returns columns estimator, K, which, snr, snr_se (jackknife
    standard error), n_draws.
    """
    table = _VAE_ESTIMATORS if isinstance(model, VAE) else _MOE_ESTIMATORS
    unknown = [e for e in estimators if e not in table]
    if unknown:
        raise ValueError(f"estimators: unknown {unknown}; choose from {sorted(table)}")
    if blocks < 3 or per_block < 1:
        raise ValueError(f"blocks must be >= 3 and per_block >= 1, got {blocks} and {per_block}")
    rep = (lambda t: t.expand(per_block, *t.shape[1:]).contiguous())
    xs = rep(x) if isinstance(x, torch.Tensor) else {k: rep(v) for k, v in x.items()}
    first = x if isinstance(x, torch.Tensor) else next(iter(x.values()))
    if first.shape[0] != 1:
        raise ValueError(f"x must hold exactly one example (the draws are its replicates), got {first.shape[0]}")
    groups = param_groups(model)
    params = groups["encoder"] + groups["decoder"]
    n_enc = sum(p.numel() for p in groups["encoder"])
    rows = []
    was_training = model.training
    model.eval()
    try:
        for K in Ks:
            means = {e: [] for e in estimators}
            for j in range(blocks):
                for e in estimators:
                    torch.manual_seed(seed + j)                  # common random numbers
                    grads = torch.autograd.grad(table[e](model, xs, K), params, allow_unused=True)
                    means[e].append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten()
                                               for gi, p in zip(grads, params)]).double().cpu())
            for e in estimators:
                m = torch.stack(means[e])                        # (J, P)
                for which, sl in (("encoder", slice(0, n_enc)), ("decoder", slice(n_enc, None))):
                    full = _snr(m[:, sl])
                    loo = [_snr(torch.cat([m[:b, sl], m[b + 1:, sl]])) for b in range(blocks)]
                    avg = sum(loo) / blocks
                    se = math.sqrt((blocks - 1) / blocks * sum((v - avg) ** 2 for v in loo))
                    rows.append(dict(estimator=e, K=int(K), which=which, snr=full, snr_se=se,
                                     n_draws=blocks * per_block))
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)
