r"""Doubly-reparameterised gradients that *are* unbiased for a mixture proposal.

Eq. (8) rests on one identity (Tucker et al. 2019): for :math:`z = g(\epsilon, \phi) \sim q_\phi` and
any f held fixed in :math:`\phi`,

.. math:: \mathbb{E}_{q_\phi}[f(z)\, \partial_\phi \log q_\phi(z)] = \mathbb{E}_\epsilon[\partial_z f\; dz/d\phi].

Two ways to use it with :math:`q_{\mathrm{mix}} = \frac1M\sum_m q_m`:

**Ancestral samples** (:func:`m_dreg_ancestral`). Draw each sample i.i.d. from the mixture: an
expert c uniformly (fixed weights, no gradient), then :math:`z = g_c(\epsilon, \phi_c)`. The identity
holds for :math:`q_{\mathrm{mix}}` itself, so eq. (8) unchanged is unbiased for the IWAE bound
eq. (2) with proposal :math:`q_{\mathrm{mix}}`.

**Stratified samples, eq. (3)** (:func:`m_dreg_stratified_unbiased`). Write the score of the
mixture with responsibilities :math:`r_m(z) = q_m(z) / \sum_l q_l(z)`:
:math:`\partial_\phi \log q_{\mathrm{mix}}(z) = \sum_{m'} r_{m'}(z)\,\partial_{\phi_{m'}} \log q_{m'}(z)`.
In stratum m the score term of sample k is :math:`\tilde w^k_m r_{m'}(z^k_m)\partial\log q_{m'}(z^k_m)`
with :math:`z^k_m \sim q_m`. Changing measure to :math:`q_{m'}`,
:math:`\mathbb{E}_{q_m}[\tilde w\, r_{m'} \partial \log q_{m'}] = \mathbb{E}_{q_{m'}}[\tilde w\, r_m\, \partial\log q_{m'}]`,
and since the strata are independent the sample :math:`z^k_{m'}` of stratum m' can stand in for
:math:`z^k_m` inside stratum m's normalised weight
:math:`\tilde w^{(m,k\leftarrow z)} = w(z) / (w(z) + \sum_{j\ne k} w(z^j_m))` (no new decoder call:
every w is already computed). The identity then turns every score term into a path term.
For sample :math:`z = z^k_{m'}` the encoder gradient of eq. (3) is

.. math:: \frac1M\Big[\Big(\tilde w^k_{m'} - \sum_m r_m(z)\,\tilde w^{(m,k\leftarrow z)}
          (1-\tilde w^{(m,k\leftarrow z)})\Big)\frac{\partial \log w(z)}{\partial z}
          - \sum_m \tilde w^{(m,k\leftarrow z)} \frac{\partial r_m(z)}{\partial z}\Big]\frac{dz}{d\phi_{m'}}

which is eq. (8) (:math:`\tilde w^2 \partial_z\log w`) when M = 1 and the path gradient when K = 1.
This does not carry over to the stratified eq. (5): there the stand-in sample would have to be
independent of all MK samples in the one normalisation, i.e. a fresh draw with its own decoder
calls.
"""
from __future__ import annotations

import math

import torch

from ..distributions import detach_params
from ..models import Batch, MixtureOfExperts, MixtureOfExpertsPosterior, MultimodalVAE
from ._common import Gradient, check_batch, check_K, log_mean_exp, reweighted
from .moe import moe_log_weights, require


def m_dreg_stratified_unbiased(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""Eq. (3) with an **unbiased** doubly-reparameterised encoder gradient (module docstring).

    Returns the value of eq. (3); decoders and prior get the plain gradient
    :math:`\frac1M\sum_{m,k}\tilde w^k_m \nabla_\theta \log w^k_m`; encoders get the formula of the
    module docstring, which has no score-function term. Cost: the decoders are differentiated
    twice (once for :math:`\partial_z \log w`, once for the decoder gradient), about one extra
    decoder backward pass over :func:`m_dreg_stratified`.
    """
    require(model, MixtureOfExperts, "m_dreg_stratified_unbiased")
    if not torch.is_grad_enabled():                                    # evaluation: the value of eq. (3)
        lw, _ = moe_log_weights(model, batch, K)
        return log_mean_exp(lw, 1).mean()
    check_K(K)
    check_batch(model, batch)
    model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = experts.batch_shape[0]
    z = experts.rsample((K,)).transpose(0, 1)                          # (M, K, B, L), z^k_m ~ q_m
    qd = detach_params(experts)
    zd = z.detach().requires_grad_(True)
    lpx = torch.stack(list(model.log_likelihood(batch, zd).values())).sum(0)
    lw = model.prior().log_prob(zd).sum(-1) + lpx - MixtureOfExpertsPosterior(qd).log_prob(zd)   # (M, K, B)
    dlw_dz, = torch.autograd.grad(lw.sum(), zd, retain_graph=True)    # each lw depends on its own z only
    with torch.no_grad():
        lwd = lw.detach()
        w = torch.softmax(lwd, dim=1)                                   # w~ within each stratum (M, K, B)
        # log sum_{j != k} w(z^j_m): leave-one-out sums of each stratum, (M, K, B)
        eye = torch.eye(K, dtype=torch.bool, device=lwd.device)[None, :, :, None]
        loo = torch.logsumexp(lwd.unsqueeze(1).masked_fill(eye, -math.inf), dim=2)
        # ws[m, m', k, b]: stratum m's normalised weight with its k-th sample replaced by z^k_{m'}
        # (for m' = m this is w~ itself)
        cand = lwd.unsqueeze(0)                                         # (1, M', K, B)
        ws = (cand - torch.logaddexp(cand, loo.unsqueeze(1))).exp()
    # r[m, m', k, b] = responsibility of expert m for z^k_{m'} (expert parameters fixed, z differentiable)
    r = torch.log_softmax(qd.log_prob(z.unsqueeze(-3)).sum(-1).movedim(-2, 0), dim=0).exp()
    with torch.no_grad():
        coef = (w - (r.detach() * ws * (1 - ws)).sum(0)) / M            # (M', K, B)
    path = (coef.unsqueeze(-1) * dlw_dz * z).sum()                      # coef dlogw/dz dz/dphi
    resp = -(ws * r).sum() / M                                          # -sum_m ws dr_m/dz dz/dphi
    theta = (w * lw).sum() / M                                          # plain gradient for decoders/prior
    surrogate = (path + resp + theta) / lw.shape[-1]
    value = log_mean_exp(lwd, 1).mean()
    return value + (surrogate - surrogate.detach())


def _ancestral_log_weights(model: MultimodalVAE, batch: Batch, K: int, stop_grad_q: bool
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """M*K i.i.d. samples from the mixture by ancestral sampling: ``lw`` (MK, B), ``z`` (MK, B, L)."""
    require(model, MixtureOfExperts, "m_iwae_ancestral / m_dreg_ancestral")
    check_K(K)
    check_batch(model, batch)
    model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = experts.batch_shape[0]
    z = MixtureOfExpertsPosterior(experts).rsample((M * K,))            # (MK, B, L)
    q = MixtureOfExpertsPosterior(detach_params(experts) if stop_grad_q else experts)
    lpx = torch.stack(list(model.log_likelihood(batch, z).values())).sum(0)
    return model.prior().log_prob(z).sum(-1) + lpx - q.log_prob(z), z


def m_iwae_ancestral(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""IWAE bound eq. (2) with the mixture as proposal and M*K i.i.d. ancestral samples:

    .. math:: \mathbb{E}_{z^{1:MK} \sim q_{\mathrm{mix}}}\Big[\log \frac{1}{MK}\sum_{n} \frac{p(z^n, x_{1:M})}{q_{\mathrm{mix}}(z^n)}\Big],

    each :math:`z^n` from an expert picked uniformly at random (the same number of decoder
    evaluations as eq. 3 and eq. 5 with K per modality). Plain gradient, unbiased.
    """
    lw, _ = _ancestral_log_weights(model, batch, K, stop_grad_q=False)
    return log_mean_exp(lw, 0).mean()


def m_dreg_ancestral(model: MultimodalVAE, batch: Batch, K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """:func:`m_iwae_ancestral` with eq. (8): **unbiased**, since every sample is drawn from q_mix itself.

    ``gradient='stl'`` gives the STL path gradient (biased for M*K > 1, as for one modality).
    """
    lw, z = _ancestral_log_weights(model, batch, K, stop_grad_q=True)
    return reweighted(lw, z, (0,), gradient).mean()
