r"""Evaluation of (multimodal) VAEs: the paper's metrics as functions that return plain data.

Every metric takes a model and data and returns dicts, tensors or :class:`pandas.DataFrame` s;
:mod:`mmvae_lite.plotting` draws them. No metric trains or changes the model it evaluates
(:mod:`.runtime`); data can be a dataset, a dict of tensors, a tensor or an iterable of batches
(:mod:`.examples`); bad arguments and models of the wrong kind are refused with a message that
names them (:mod:`.checks`).

What is measured, where, and how it relates to the paper (Shi et al. 2019) and the authors'
scripts (``src/report/*.py`` of iffsid/mmvae):

==================================  ==================  ===============================================
function                            module              paper
==================================  ==================  ===============================================
:func:`coherence`                   ``coherence``       Table 2 / 5: cross and joint coherence
:func:`plate_polarity`              ``coherence``       diagnosis: the SVHN plate an image chose
:func:`get_digit_classifier`        ``classifiers``     the digit classifiers coherence asks
:func:`latent_accuracy`             ``latent``          Table 1: linear probe on posterior means
:func:`kl_per_dimension`            ``latent``          Figure 5 (right): per-dimension KLs
:func:`latent_traversals`           ``latent``          Figure 5 (left): traversals per dimension
:func:`latent_embedding`            ``latent``          2-D PCA / t-SNE of posterior samples
:func:`log_likelihoods`             ``likelihoods``     Table 3: IWAE estimates per example
:func:`cub_coherence`               ``cub``             Table 4: CCA of images and sentences
:func:`caption_attribute_scores`    ``cub``             stand-in: captions naming their bird's colours
:func:`image_caption_scores`        ``cub``             stand-in: the same for captions of test images
:func:`gradient_snr`                ``gradients``       Appendix C: SNR of IWAE / STL / DReG
:func:`dead_units`                  ``units``           training health: ReLU units that never fire
:func:`evaluate_mnist_svhn`         ``reports``         Tables 1-3 (and 5) in one call
:func:`evaluate_cub`                ``reports``         Table 4 in one call
==================================  ==================  ===============================================
"""
from .classifiers import (CLASSIFIER_FORMAT, DigitClassifier, classifier_accuracy, classifier_path,
                          get_digit_classifier, load_digit_classifier, predict_digits, train_digit_classifier)
from .coherence import coherence, cross_coherence, joint_coherence, plate_polarity
from .cub import (CCA, SentenceEmbedder, attribute_accuracy, caption_attribute_scores, cub_coherence, fit_cub_cca,
                  image_caption_scores)
from .examples import iterate_examples
from .gradients import gradient_snr
from .latent import kl_per_dimension, latent_accuracy, latent_embedding, latent_traversals, posterior_features
from .likelihoods import likelihood_summary, log_likelihoods
from .reports import evaluate_cub, evaluate_mnist_svhn
from .runtime import evaluation_mode
from .units import dead_units

__all__ = [
    "evaluation_mode", "iterate_examples",
    "DigitClassifier", "train_digit_classifier", "get_digit_classifier", "load_digit_classifier", "classifier_path",
    "classifier_accuracy", "predict_digits", "CLASSIFIER_FORMAT",
    "coherence", "cross_coherence", "joint_coherence", "plate_polarity",
    "posterior_features", "latent_accuracy", "kl_per_dimension", "latent_traversals", "latent_embedding",
    "log_likelihoods", "likelihood_summary",
    "SentenceEmbedder", "CCA", "fit_cub_cca", "cub_coherence", "attribute_accuracy", "caption_attribute_scores", "image_caption_scores",
    "gradient_snr", "dead_units",
    "evaluate_mnist_svhn", "evaluate_cub",
]
