"""Gradient signal-to-noise ratios (appendix C; Rainforth et al. 2018, Tucker et al. 2019).

How the SNR of the encoder's and the decoder's gradient estimators moves as the number of
importance samples K grows: the IWAE gradient's encoder SNR falls with K, DReG's does not.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import pandas as pd
import torch
from ..objectives.snr import param_groups

from ..models import MixtureOfExperts, VAE
from .checks import Model, check_choice, check_int, check_ints, model_names
from .examples import one_batch
from .runtime import device_of, evaluation_mode, progress_bar, seeded

__all__ = ["gradient_snr"]

ESTIMATORS = ("iwae", "stl", "dreg")


def _snr_objective(model: Model, estimator: str, mixture: bool) -> Callable:
    from .. import objectives as obj
    if isinstance(model, VAE):
        if estimator == "iwae":
            return obj.iwae
        return lambda m, x, K: obj.dreg(m, x, K, gradient=estimator)
    if not isinstance(model.joint_rule, MixtureOfExperts):
        raise TypeError("gradient_snr takes a VAE or a MultimodalVAE with a mixture-of-experts posterior (MMVAE: "
                        f"the IWAE/DReG objectives); got one with {model.joint_rule!r}")
    if estimator == "iwae":
        return obj.m_iwae_mixture if mixture else obj.m_iwae_stratified
    f = obj.m_dreg_mixture if mixture else obj.m_dreg_stratified
    return lambda m, x, K: f(m, x, K, gradient=estimator)


def gradient_snr(model: Model, batch: "Mapping[str, torch.Tensor] | torch.Tensor", *,
                 Ks: Sequence[int] = (1, 4, 16, 64), estimators: Sequence[str] = ("iwae", "stl", "dreg"),
                 n_draws: int = 100, mixture: bool = False, seed: Optional[int] = 0,
                 progress: bool = False) -> pd.DataFrame:
    r"""Signal-to-noise ratio of encoder and decoder gradient estimators as K grows.

    For each estimator (``"iwae"``: the standard IWAE gradient; ``"stl"``: sticking-the-landing;
    ``"dreg"``: doubly reparameterised, eq. 8) and K, draws ``n_draws`` independent gradients of
    the objective on the fixed ``batch`` (objectives.iwae / objectives.dreg for a :class:`VAE`,
    the stratified ``m_*`` variants for an MoE model, the mixture ones with ``mixture``). Per
    parameter :math:`\mathrm{SNR} = |\bar g| / \mathrm{sd}(g)` over the draws (Rainforth et al.
    2018); the table reports the **mean over the parameters** of the group (``snr``) and the
    median (``snr_median``), skipping parameters whose gradient never varies. A parameter without
    signal still scores about :math:`\sqrt{2/(\pi n)}` (0.08 for 100 draws), which bounds the mean
    from below; :func:`mmvae_lite.objectives.snr.crn_gradient_snr` gives a group SNR with standard
    errors instead. Groups:
    ``encoder`` (all encoder parameters, including embeddings tied to a decoder) and ``decoder``
    (decoders and the prior). Gradients come from :func:`torch.autograd.grad`, so the model's
    ``.grad`` fields are untouched. Columns: estimator, K, which, snr, snr_median, n_params.
    """
    names = model_names(model, "gradient_snr")
    if isinstance(batch, torch.Tensor):
        batch = {names[0]: batch}
    batch = one_batch(model, batch, "gradient_snr")
    Ks = check_ints(Ks, "Ks")
    estimators = [check_choice(e, "estimators", ESTIMATORS) for e in
                  ([estimators] if isinstance(estimators, str) else estimators)]
    if not estimators:
        raise ValueError(f"estimators must name some of {list(ESTIMATORS)}, got none")
    n_draws = check_int(n_draws, "n_draws", minimum=2)   # a standard deviation needs two draws
    for est in estimators:
        _snr_objective(model, est, mixture)                # the model kind, before any work
    dev = device_of(model)
    batch = {k: v.to(dev) for k, v in batch.items()}
    x = batch[names[0]] if isinstance(model, VAE) else batch
    groups = param_groups(model)
    params = groups["encoder"] + groups["decoder"]
    n_enc = len(groups["encoder"])
    rows = []
    jobs = [(e, K) for e in estimators for K in Ks]
    with evaluation_mode(model, grad=True), seeded(seed, dev):
        for est, K in progress_bar(jobs, progress, len(jobs), "gradient SNR"):
            f = _snr_objective(model, est, mixture)
            # sums of the draws' differences from the first draw: no cancellation for a gradient
            # that hardly varies (sum g^2 - n mean^2 would leave rounding noise as its spread)
            g0: list = [None] * len(params)
            s1 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
            s2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
            for _ in range(n_draws):
                value = f(model, x, K)
                grads = torch.autograd.grad(value, params, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is not None:
                        g = g.double()
                        if g0[i] is None:
                            g0[i] = g
                        d = g - g0[i]
                        s1[i] += d
                        s2[i] += d * d
            first = [torch.zeros_like(p, dtype=torch.float64) if g is None else g for p, g in zip(params, g0)]
            for which, sl in (("encoder", slice(0, n_enc)), ("decoder", slice(n_enc, None))):
                flat = (lambda ts: torch.cat([t.flatten() for t in ts]) if ts else torch.zeros(0, dtype=torch.float64))
                a0, a1, a2 = flat(first[sl]), flat(s1[sl]), flat(s2[sl])
                mean = a0 + a1 / n_draws
                sd = ((a2 - a1 ** 2 / n_draws) / (n_draws - 1)).clamp_min(0).sqrt()
                # skip parameters whose gradient does not vary (up to rounding): their SNR is undefined
                ok = (sd > 0) & (sd > 1e-6 * mean.abs())
                snr = (mean.abs()[ok] / sd[ok]).cpu()
                rows.append(dict(estimator=est, K=int(K), which=which,
                                 snr=float(snr.mean()) if len(snr) else float("nan"),
                                 snr_median=float(snr.median()) if len(snr) else float("nan"),
                                 n_params=int(ok.sum())))
    return pd.DataFrame(rows)
