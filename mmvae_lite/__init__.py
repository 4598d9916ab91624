"""mmvae_lite: multimodal VAEs (MMVAE, MVAE) in a few small PyTorch modules.

A multimodal model is a list of unimodal encoder/decoder pairs (:class:`Modality`), a prior and
a joint-posterior rule (mixture or product of experts); objectives are pure functions
``(model, batch, K) -> scalar``. See the book for a guided tour.
"""
from .config import Config, build_model, get_config, make_modality
from .distributions import (CategoricalLikelihood, LaplaceLikelihood, Prior, kl_divergence, make_latent,
                            positive_scale)
from .models import (Modality, MixtureOfExperts, MultimodalVAE, ProductOfExperts, VAE)
from .objectives import (dreg, elbo, get_objective, iwae, m_dreg_mixture, m_dreg_stratified, m_elbo_is,
                         m_iwae_mixture, m_iwae_stratified, mvae_elbo)
from .training import History, NonFiniteError, Trainer, select_device
from .reference import pretrained, pretrained_record
from . import data, evaluation, notebook, official, plotting, reference  # noqa: E402  (submodules as attributes)

__version__ = "0.1.0"

__all__ = [
    "Config", "get_config", "build_model", "make_modality",
    "Prior", "LaplaceLikelihood", "CategoricalLikelihood", "kl_divergence", "make_latent", "positive_scale",
    "Modality", "VAE", "MultimodalVAE", "MixtureOfExperts", "ProductOfExperts",
    "elbo", "iwae", "dreg", "m_elbo_is", "m_iwae_stratified", "m_iwae_mixture", "m_dreg_stratified",
    "m_dreg_mixture", "mvae_elbo", "get_objective",
    "Trainer", "History", "NonFiniteError", "select_device", "pretrained", "pretrained_record",
    "data", "evaluation", "notebook", "official", "plotting", "reference",
]
