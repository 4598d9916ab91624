"""Mixture of experts (MMVAE): eq. (3), eq. (5), their per-stratum DReG/STL gradients, appendix B."""
from __future__ import annotations

from typing import Literal

import torch

from ..distributions import detach_params, kl_divergence
from ..models import Batch, MixtureOfExperts, MixtureOfExpertsPosterior, MultimodalVAE
from ._common import Gradient, check_batch, check_K, log_mean_exp, reweighted

CrossGradient = Literal["authors", "appendix"]


def require(model: MultimodalVAE, rule: type, what: str) -> None:
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
    require(model, MixtureOfExperts, "moe_log_weights")
    check_K(K)
    check_batch(model, batch)
    model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    z = experts.rsample((K,)).transpose(0, 1)                          # (M, K, B, L)
    q = MixtureOfExpertsPosterior(detach_params(experts) if stop_grad_q else experts)
    lpx = torch.stack(list(model.log_likelihood(batch, z).values())).sum(0)
    return model.prior().log_prob(z).sum(-1) + lpx - q.log_prob(z), z


def stratum_bounds(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""The M per-expert IWAE bounds that eq. (3) averages, one per stratum and example: (M, B).

    .. math:: s_m = \log \frac1K \sum_k w^k_m, \quad z^{1:K}_m \sim q_m(z \mid x_m).

    Their mean over m is eq. (3) and their log-mean-exp over m is eq. (5) on the same samples,
    so the gap between the two bounds is Jensen's gap between the strata.
    """
    lw, _ = moe_log_weights(model, batch, K)
    return log_mean_exp(lw, 1)


def m_iwae_stratified(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""Stratified MoE IWAE, eq. (3) (the authors' ``m_iwae_looser``, used for the paper's results):

    .. math:: \frac1M \sum_m \mathbb{E}_{z^{1:K}_m \sim q_m}\Big[\log \frac1K \sum_k w^k_m\Big].

    Plain (reparameterised) gradient: an unbiased estimate of the gradient of eq. (3).
    """
    return stratum_bounds(model, batch, K).mean(0).mean()


def m_iwae_mixture(model: MultimodalVAE, batch: Batch, K: int) -> torch.Tensor:
    r"""Tighter MoE IWAE, eq. (5): one log-mean-exp over all M*K samples, K per modality:

    .. math:: \mathbb{E}\Big[\log \frac{1}{MK} \sum_m \sum_k w^k_m\Big] \ge \text{eq. (3)}.

    Appendix A draws L = K/M samples per modality (K in all); this function, like the authors'
    code, draws K per modality (MK in all). The ordering (5) >= (3) holds at equal samples per
    modality. Plain gradient: unbiased for eq. (5).
    """
    lw, _ = moe_log_weights(model, batch, K)
    return log_mean_exp(lw, (0, 1)).mean()


def m_dreg_stratified(model: MultimodalVAE, batch: Batch, K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    r"""Eq. (3) with eq. (8)'s weights applied per modality stratum (the authors' intent, and MultiVae's).

    **Biased for M > 1 and K > 1.** Eq. (8) assumes each sample comes from the q in the weights'
    denominator; here :math:`z^k_m \sim q_m` while the weights divide by the mixture, so the
    double reparameterisation of the score term does not hold (``tests/test_estimator_bias.py``
    measures the bias on a toy; chapter 6 tabulates it). ``gradient='stl'`` gives the
    :math:`\tilde w`-weighted path gradient the authors' code actually applied (also biased, more
    so). For an unbiased gradient of eq. (3) with the same reparameterised form use
    :func:`m_dreg_stratified_unbiased`; M = 1 or K = 1 makes this one exact as well.
    """
    lw, z = moe_log_weights(model, batch, K, stop_grad_q=True)
    return reweighted(lw, z, (1,), gradient).mean()


def m_dreg_mixture(model: MultimodalVAE, batch: Batch, K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """Eq. (5) with eq. (8)'s weights normalised over all M*K stratified samples.

    **Biased for M > 1** (samples from the experts, weights divided by the mixture; less than the
    per-stratum version on the book's toy). No unbiased DReG exists for this stratified bound
    without fresh samples; :func:`m_dreg_ancestral` is unbiased for the mixture-proposal IWAE bound
    with i.i.d. ancestral samples.
    """
    lw, z = moe_log_weights(model, batch, K, stop_grad_q=True)
    return reweighted(lw, z, (0, 1), gradient).mean()


def m_elbo_is(model: MultimodalVAE, batch: Batch, K: int = 1, cross_gradient: CrossGradient = "authors"
              ) -> torch.Tensor:
    r"""Importance-sampled multimodal ELBO, appendix B: linear in M (each decoder sees only its own samples).

    .. math:: \frac1M \sum_i \Big[\sum_j \mathbb{E}_{z_j \sim \bar q_j}\Big[\frac{q_i(z_j|x_i)}{\bar q_j(z_j|x_j)}
              \lambda_j \log p(x_j|z_j)\Big] - \mathrm{KL}(q_i(z|x_i)\,\|\,p(z))\Big]

    where :math:`\bar q` is stop-gradient and the ratio is 1 for i = j. Each term estimates
    :math:`\mathbb{E}_{q_i}[\log p(x_j|z)]` with modality j's own samples.

    ``cross_gradient`` chooses what the cross terms (i != j) differentiate:

    * ``"authors"`` (default, as the authors' code): :math:`z_j` stays reparameterised in every term,
      so :math:`\phi_j` also gets gradient through the samples of the cross terms. This is not the
      gradient of the objective: its expectation does not depend on :math:`\phi_j` for i != j.
      Kept as the default so that runs and benchmarks compare with the authors' code like for like.
    * ``"appendix"`` (registered as ``m_elbo_is_appendix``): appendix B's version, the cross terms
      give gradient only to :math:`\phi_i` (through the ratio) and :math:`\theta_j`; the i = j terms
      keep their reparameterised reconstruction gradient. An unbiased gradient of the objective.
    """
    require(model, MixtureOfExperts, "m_elbo_is")
    if cross_gradient not in ("authors", "appendix"):
        raise ValueError(f"cross_gradient must be 'authors' or 'appendix', got {cross_gradient!r}")
    check_K(K)
    check_batch(model, batch)
    present = model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = len(present)
    z = experts.rsample((K,)).transpose(0, 1)                          # (M_j, K, B, L), z_j ~ q_j
    zd = z.detach()
    lq = experts.log_prob(zd.unsqueeze(-3)).sum(-1).permute(2, 0, 1, 3)  # (M_i, M_j, K, B): log q_i(z_j)
    own = torch.diagonal(lq, dim1=0, dim2=1).permute(2, 0, 1).detach()  # (M_j, K, B): log q_j(z_j)
    off = (1.0 - torch.eye(M, device=z.device, dtype=z.dtype))[:, :, None, None]
    ratio = ((lq - own.unsqueeze(0)) * off).exp()                      # 1 exactly on the diagonal
    if cross_gradient == "appendix":
        # the path gradient reaching z_j from sum_i ratio_ij log p(x_j|z_j) is scaled by
        # 1 / sum_i ratio_ij (>= 1, the i = j ratio is 1), leaving only the i = j term's; values unchanged
        z = zd + (z - zd) / ratio.detach().sum(0).unsqueeze(-1)
    lpx = torch.stack([model.llik_scaling[n] * model.modalities[n].log_likelihood(
        model.modalities[n].decode(z[j]), batch[n]) for j, n in enumerate(present)])  # (M_j, K, B)
    kl = kl_divergence(experts, model.prior()).sum(-1)                 # (M_i, B)
    return ((ratio * lpx.unsqueeze(0)).sum(1).mean(1) - kl).mean(0).mean()
