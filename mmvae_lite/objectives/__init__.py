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

**Which gradients are unbiased.** Eq. (8) is exact when every sample is drawn from the q that
divides the weights: ``dreg`` (one modality) and ``m_dreg_ancestral`` (i.i.d. samples from the
mixture). The multimodal objectives the paper trains draw *stratified* samples from each expert
while dividing by the mixture; applying eq. (8) there (``m_dreg_stratified``, ``m_dreg_mixture``:
the authors' intent and MultiVae's implementation) is **biased** for M > 1 and K > 1, and STL more
so. Unbiased gradients of eq. (3): ``m_iwae_stratified`` (plain) and ``m_dreg_stratified_unbiased``
(reparameterised, derived in :mod:`.unbiased`); of eq. (5): ``m_iwae_mixture``. Chapter 6 of the
book measures these biases against an exact gradient.

Every DReG/STL objective *returns the value of its bound* (so logs show the bound) while its
gradient is the chosen estimator. Every objective checks K (an integer >= 1) and the batch
(non-empty, one size for all modalities) and raises a ValueError naming the argument.
"""
from __future__ import annotations

from functools import partial

from ..distributions import kl_divergence
from ._common import Gradient, Objective, check_gradient, log_mean_exp
from .moe import (m_dreg_mixture, m_dreg_stratified, m_elbo_is, m_iwae_mixture, m_iwae_stratified,
                  moe_log_weights, stratum_bounds)
from .poe import mvae_elbo
from .snr import crn_gradient_snr
from .unbiased import m_dreg_ancestral, m_dreg_stratified_unbiased, m_iwae_ancestral
from .unimodal import dreg, elbo, iwae

OBJECTIVES: dict[str, Objective] = {
    "elbo": elbo, "iwae": iwae, "dreg": dreg,
    "m_elbo_is": m_elbo_is, "m_elbo_is_appendix": partial(m_elbo_is, cross_gradient="appendix"),
    "m_iwae_stratified": m_iwae_stratified, "m_iwae_mixture": m_iwae_mixture,
    "m_dreg_stratified": m_dreg_stratified, "m_dreg_mixture": m_dreg_mixture,
    "m_dreg_stratified_unbiased": m_dreg_stratified_unbiased,
    "m_iwae_ancestral": m_iwae_ancestral, "m_dreg_ancestral": m_dreg_ancestral,
    "mvae_elbo": mvae_elbo,
}
_TAKES_GRADIENT = {"dreg", "m_dreg_stratified", "m_dreg_mixture", "m_dreg_ancestral"}


def get_objective(name: str, gradient: Gradient = "dreg") -> Objective:
    """Look up an objective by name; ``gradient`` applies to the DReG family ('dreg' or 'stl')."""
    try:
        fn = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    if name in _TAKES_GRADIENT:
        check_gradient(gradient)
        return partial(fn, gradient=gradient)
    return fn


__all__ = ["elbo", "iwae", "dreg", "m_elbo_is", "m_iwae_stratified", "m_iwae_mixture", "m_dreg_stratified",
           "m_dreg_mixture", "m_dreg_stratified_unbiased", "m_iwae_ancestral", "m_dreg_ancestral",
           "mvae_elbo", "moe_log_weights", "stratum_bounds", "crn_gradient_snr", "log_mean_exp", "kl_divergence", "get_objective", "OBJECTIVES"]
