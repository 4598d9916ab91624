r"""Training objectives as pure functions ``(model, batch, K) -> scalar`` (to be *maximised*).

Each returns the per-example average over the batch (the authors sum over the batch; Adam is
invariant to that constant). Equation numbers refer to Shi et al. (2019) and its appendix.

Log importance weights, for samples z_k from a proposal q:

.. math:: \log w_k = \log p(z_k) + \sum_m \lambda_m \log p(x_m \mid z_k) - \log q(z_k \mid x_{1:M})

where :math:`\lambda_m` is the model's per-modality likelihood scaling.

**DReG** (appendix C, eq. 8; Tucker et al. 2019). With :math:`\tilde w_k = w_k / \sum_j w_j`,

.. math:: \nabla_\phi \mathcal{L}_{\mathrm{IWAE}} = \mathbb{E}\Big[\sum_k \tilde w_k^{\,2}\,
          \frac{\partial \log w_k}{\partial z_k}\frac{d z_k}{d\phi}\Big],

while the decoder (and prior) get the plain IWAE gradient :math:`\sum_k \tilde w_k \nabla_\theta \log w_k`.
We compute ``log q`` with detached encoder parameters, form the surrogate
:math:`\sum_k \mathrm{sg}(\tilde w_k) \log w_k` and scale the gradient reaching the samples by a further
:math:`\tilde w_k` with a hook registered **on the very tensor the weights were computed from**.
The authors register that hook on ``torch.cat(zss)``, a copy that no loss depends on, so it never
fires: their encoders receive :math:`\sum_k \tilde w_k \partial_z \log w_k\, dz/d\phi`, the
"sticking the landing" (STL) IWAE gradient. ``gradient="stl"`` reproduces that behaviour.

Every DReG/STL objective *returns the value of the IWAE bound* (so logs show the bound) while
its gradient is the chosen estimator.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Literal

import torch

from .distributions import detach_params, kl_divergence
from .models import Batch, MixtureOfExperts, MixtureOfExpertsPosterior, MultimodalVAE, ProductOfExperts, VAE

Gradient = Literal["dreg", "stl"]
Objective = Callable[..., torch.Tensor]


def log_mean_exp(x: torch.Tensor, dim: "int | tuple[int, ...]" = 0) -> torch.Tensor:
    """log (1/n sum exp x) over ``dim`` (one axis or several), computed stably."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = math.prod(x.shape[d] for d in dims)
    return torch.logsumexp(x, dim=dims) - math.log(n)


def _reweighted(lw: torch.Tensor, z: torch.Tensor, dims: tuple[int, ...], gradient: Gradient) -> torch.Tensor:
    """IWAE value over ``dims`` with the DReG (or STL) gradient. ``lw`` used detached-q densities."""
    if gradient not in ("dreg", "stl"):
        raise ValueError(f"gradient must be 'dreg' or 'stl', got {gradient!r}")
    lse = torch.logsumexp(lw, dim=dims, keepdim=True)
    with torch.no_grad():
        w = (lw - lse).exp()                          # normalised weights, w~_k
    if gradient == "dreg" and z.requires_grad:
        # d/dz of sum_k w~_k log w_k is w~_k dlogw_k/dz; scaling it by w~_k again gives eq. 8.
        z.register_hook(lambda g: g * w.unsqueeze(-1))
    surrogate = (w * lw).sum(dims)                    # gradient: sum_k w~_k grad log w_k
    value = (lse.squeeze(dims) - math.log(math.prod(lw.shape[d] for d in dims))).detach()
    return value + (surrogate - surrogate.detach())


# -------------------------------------------------------------------------------------------
# One modality
# -------------------------------------------------------------------------------------------
def elbo(model: VAE, x: "torch.Tensor | Batch", K: int = 1, analytic_kl: bool = True) -> torch.Tensor:
    r"""ELBO, eq. (1): :math:`\mathbb{E}_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))`.

    The expectation uses K samples; the KL is closed-form (``analytic_kl=False`` uses the K-sample
    Monte Carlo estimate :math:`\frac1K\sum_k \log w_k` instead).
    """
    if not analytic_kl:
        lw, _ = model.log_weights(x, K)
        return lw.mean(0).mean()
    q = model.encode(x)
    z = q.rsample((K,))
    xx = model._x(x)
    lpx = model.modality.log_likelihood(model.decode(z), xx).mean(0)
    return (lpx - kl_divergence(q, model.prior()).sum(-1)).mean()


def iwae(model: VAE, x: "torch.Tensor | Batch", K: int) -> torch.Tensor:
    r"""IWAE bound, eq. (2): :math:`\mathbb{E}_{z_{1:K}\sim q}[\log \frac1K \sum_k w_k]`, standard gradient."""
    lw, _ = model.log_weights(x, K)
    return log_mean_exp(lw, 0).mean()


def dreg(model: VAE, x: "torch.Tensor | Batch", K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """IWAE bound (eq. 2) with the DReG gradient (appendix C, eq. 8), or STL with ``gradient='stl'``."""
    lw, z = model.log_weights(x, K, stop_grad_q=True)
    return _reweighted(lw, z, (0,), gradient).mean()


# -------------------------------------------------------------------------------------------
# Mixture of experts (MMVAE)
# -------------------------------------------------------------------------------------------
def _require(model: MultimodalVAE, rule: type, what: str) -> None:
    if not isinstance(model, MultimodalVAE) or not isinstance(model.joint_rule, rule):
        raise TypeError(f"{what} needs a MultimodalVAE with a {rule.__name__} joint posterior; "
                        f"got {type(model).__name__}" + (f" with {model.joint_rule!r}" if isinstance(model, MultimodalVAE) else ""))


def moe_log_weights(model: MultimodalVAE, batch: Batch, K: int, stop_grad_q: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Stratified log weights for the MoE posterior: ``lw`` (M, K, B) and samples ``z`` (M, K, B, L).

    :math:`z^k_m \sim q_m(z|x_m)` and
    :math:`\log w^k_m = \log p(z^k_m) + \sum_d \lambda_d \log p(x_d|z^k_m) - \log \frac1M\sum_{m'} q_{m'}(z^k_m|x_{m'})`.
    All M x M decoder evaluations are M decoder calls on the stacked samples.
    """
    _require(model, MixtureOfExperts, "moe_log_weights")
    model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    z = experts.rsample((K,)).transpose(0, 1)                          # (M, K, B, L)
    q = MixtureOfExpertsPosterior(detach_params(experts) if stop_grad_q else experts)
    lpx = torch.stack(list(model.log_likelihood(batch, z).values())).sum(0)
    return model.prior().log_prob(z).sum(-1) + lpx - q.log_prob(z), z


def m_iwae_stratified(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""Stratified MoE IWAE, eq. (3) (the authors' ``m_iwae_looser``, used for the paper's results):

    .. math:: \frac1M \sum_m \mathbb{E}_{z^{1:K}_m \sim q_m}\Big[\log \frac1K \sum_k w^k_m\Big].
    """
    lw, _ = moe_log_weights(model, batch, K)
    return log_mean_exp(lw, 1).mean(0).mean()


def m_iwae_mixture(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""Tighter MoE IWAE, eq. (5): one log-mean-exp over all M*K samples (K per modality, as the authors):

    .. math:: \mathbb{E}\Big[\log \frac{1}{MK} \sum_m \sum_k w^k_m\Big] \ge \text{eq. (3)}.
    """
    lw, _ = moe_log_weights(model, batch, K)
    return log_mean_exp(lw, (0, 1)).mean()


def m_dreg_stratified(model: MultimodalVAE, batch: Batch, K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """Eq. (3) with the DReG gradient (eq. 8) per modality stratum; ``gradient='stl'`` = authors' effective gradient."""
    lw, z = moe_log_weights(model, batch, K, stop_grad_q=True)
    return _reweighted(lw, z, (1,), gradient).mean()


def m_dreg_mixture(model: MultimodalVAE, batch: Batch, K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """Eq. (5) with the DReG gradient (eq. 8), weights normalised over all M*K samples."""
    lw, z = moe_log_weights(model, batch, K, stop_grad_q=True)
    return _reweighted(lw, z, (0, 1), gradient).mean()


def m_elbo_is(model: MultimodalVAE, batch: Batch, K: int = 1) -> torch.Tensor:
    r"""Importance-sampled multimodal ELBO, appendix B: linear in M (each decoder sees only its own samples).

    .. math:: \frac1M \sum_i \Big[\sum_j \mathbb{E}_{z_j \sim \bar q_j}\Big[\frac{q_i(z_j|x_i)}{\bar q_j(z_j|x_j)}
              \lambda_j \log p(x_j|z_j)\Big] - \mathrm{KL}(q_i(z|x_i)\,\|\,p(z))\Big]

    where :math:`\bar q` is stop-gradient and the ratio is 1 for i = j. Each term estimates
    :math:`\mathbb{E}_{q_i}[\log p(x_j|z)]` with modality j's own samples.
    """
    _require(model, MixtureOfExperts, "m_elbo_is")
    present = model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = len(present)
    z = experts.rsample((K,)).transpose(0, 1)                          # (M_j, K, B, L), z_j ~ q_j
    lpx = torch.stack([model.llik_scaling[n] * model.modalities[n].log_likelihood(
        model.modalities[n].decode(z[j]), batch[n]) for j, n in enumerate(present)])  # (M_j, K, B)
    zd = z.detach()
    lq = experts.log_prob(zd.unsqueeze(-3)).sum(-1).permute(2, 0, 1, 3)  # (M_i, M_j, K, B): log q_i(z_j)
    own = torch.diagonal(lq, dim1=0, dim2=1).permute(2, 0, 1).detach()  # (M_j, K, B): log q_j(z_j)
    off = (1.0 - torch.eye(M, device=z.device, dtype=z.dtype))[:, :, None, None]
    ratio = ((lq - own.unsqueeze(0)) * off).exp()                      # 1 exactly on the diagonal
    kl = kl_divergence(experts, model.prior()).sum(-1)                 # (M_i, B)
    return ((ratio * lpx.unsqueeze(0)).sum(1).mean(1) - kl).mean(0).mean()


# -------------------------------------------------------------------------------------------
# Product of experts (MVAE)
# -------------------------------------------------------------------------------------------
def mvae_elbo(model: MultimodalVAE, batch: Batch, K: int = 1, kl_weight: float = 1.0) -> torch.Tensor:
    r"""The MVAE objective (Wu & Goodman 2018) with sub-sampling: the joint ELBO plus each modality's own ELBO.

    .. math:: \mathrm{ELBO}(x_{1:M}) + \sum_m \mathrm{ELBO}(x_m),\qquad
              q(z|x_S) \propto p(z) \prod_{m\in S} q_m(z|x_m)

    Each ELBO is :math:`\mathbb{E}_{q(z|x_S)}[\sum_{d\in S}\lambda_d \log p(x_d|z)] - \beta\,\mathrm{KL}(q(z|x_S)\|p(z))`
    with closed-form KL. All M+1 products come from one batched computation; each decoder is called
    once, on the samples of the subsets that contain its modality. Note: a *sum* of M+1 ELBOs, not a
    bound on log p(x_1:M).
    """
    _require(model, ProductOfExperts, "mvae_elbo")
    present = model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = len(present)
    prior = model.prior()
    mask = torch.cat([torch.ones(1, M, device=experts.loc.device), torch.eye(M, device=experts.loc.device)])
    q = model.joint_rule.subsets(experts, prior, mask)                 # (S, B, L)
    z = q.rsample((K,)).transpose(0, 1)                                # (S, K, B, L)
    rec = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
    for j, n in enumerate(present):
        rows = mask[:, j].nonzero().squeeze(1)
        lp = model.llik_scaling[n] * model.modalities[n].log_likelihood(model.modalities[n].decode(z[rows]), batch[n])
        rec = rec.index_add(0, rows, lp)
    kl = kl_divergence(q, prior).sum(-1)                               # (S, B)
    return (rec.mean(1) - kl_weight * kl).sum(0).mean()


# -------------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------------
OBJECTIVES: dict[str, Objective] = {
    "elbo": elbo, "iwae": iwae, "dreg": dreg,
    "m_elbo_is": m_elbo_is, "m_iwae_stratified": m_iwae_stratified, "m_iwae_mixture": m_iwae_mixture,
    "m_dreg_stratified": m_dreg_stratified, "m_dreg_mixture": m_dreg_mixture, "mvae_elbo": mvae_elbo,
}
_TAKES_GRADIENT = {"dreg", "m_dreg_stratified", "m_dreg_mixture"}


def get_objective(name: str, gradient: Gradient = "dreg") -> Objective:
    """Look up an objective by name; ``gradient`` applies to the DReG family ('dreg' or 'stl')."""
    try:
        fn = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    if name in _TAKES_GRADIENT:
        if gradient not in ("dreg", "stl"):
            raise ValueError(f"gradient must be 'dreg' or 'stl', got {gradient!r}")
        return partial(fn, gradient=gradient)
    return fn


__all__ = ["elbo", "iwae", "dreg", "m_elbo_is", "m_iwae_stratified", "m_iwae_mixture", "m_dreg_stratified",
           "m_dreg_mixture", "mvae_elbo", "moe_log_weights", "log_mean_exp", "get_objective", "OBJECTIVES"]
